package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/fencing"
	"github.com/docexec/docexec/internal/redact"
)

// DefaultTable is the documents table when Options.Table is empty.
const DefaultTable = "documents"

// DefaultBatchSize is the rows per INSERT when Options.BatchSize is zero.
const DefaultBatchSize = 1000

// partitionsTable holds the watermarks of every pool and partition.
const partitionsTable = "docexec_partitions"

// columnsPerRow is the number of bind parameters one document row takes:
// one per column of documentRow.
var columnsPerRow = reflect.TypeFor[documentRow]().NumField()

// Bind-parameter limits per statement: PostgreSQL's wire protocol counts them
// in an int16; SQLite's SQLITE_MAX_VARIABLE_NUMBER is 32766 since 3.32.
const (
	postgresMaxParams = 65535
	sqliteMaxParams   = 32766
)

// Options tune a Store. The zero value is ready to use.
type Options struct {
	// Table holds the documents; default DefaultTable = "documents". It must
	// be a lowercase SQL identifier ([a-z_][a-z0-9_]*, at most 54 bytes, so
	// that "<table>_readable" fits PostgreSQL's 63). Use the DSN's
	// search_path to put it in another PostgreSQL schema.
	Table string
	// BatchSize bounds rows per INSERT statement inside Save; default 1000.
	// It is lowered to what the driver's bind-parameter limit allows.
	BatchSize int
}

// Watermark is a partition's synced-offset watermark: the input offset that
// the synced states cover, written under the writer's fencing epoch.
type Watermark struct {
	Pool      string
	Partition int32
	// Offset is the input offset below which every change is stored, or
	// NoOffset. A write never moves it backwards.
	Offset int64
	Epoch  uint64
}

// Store is the durable copy of document states. It is safe for concurrent use.
type Store struct {
	db        *gorm.DB
	dialect   string // "postgres" or "sqlite"
	table     string
	batchSize int
	maxParams int
	upsert    clause.OnConflict
}

var tableName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,53}$`)

// OpenPostgres connects to PostgreSQL (dsn as pgx takes it: a URL or
// key=value pairs) and checks that the server answers. Call Migrate before
// the first Load or Save on a new database. Its errors never show the DSN
// or its password.
func OpenPostgres(ctx context.Context, dsn string, opts Options) (*Store, error) {
	secrets := redact.New(redact.DSN(dsn)...)
	if err := CheckDSN(dsn); err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, secrets.Error(fmt.Errorf("store: open postgres: %w", err))
	}
	// Our strings are UTF-8. Left to the server's default (the database's
	// encoding), a LATIN1 database would store them as mojibake; told, it
	// converts them, and refuses a character it cannot hold.
	cfg.RuntimeParams["client_encoding"] = "UTF8"
	db, err := gorm.Open(postgres.New(postgres.Config{Conn: stdlib.OpenDB(*cfg)}), gormConfig())
	if err != nil {
		return nil, secrets.Error(fmt.Errorf("store: open postgres: %w", err))
	}
	s, err := newStore(db, "postgres", postgresMaxParams, opts)
	if err != nil {
		return nil, closeAfter(db, err)
	}
	if err := s.Ping(ctx); err != nil {
		return nil, closeAfter(db, secrets.Error(fmt.Errorf("store: open postgres: %w", err)))
	}
	return s, nil
}

// CheckDSN reports whether pgx can read dsn, saying why not without
// quoting it: pgx and net/url put the text they refuse, password and all,
// into their errors.
func CheckDSN(dsn string) error {
	_, err := pgconn.ParseConfig(dsn)
	if err == nil {
		return nil
	}
	cause := err
	var perr *pgconn.ParseConfigError
	if errors.As(err, &perr) {
		cause = perr.Unwrap()
		var uerr *url.Error
		if errors.As(cause, &uerr) {
			cause = uerr.Err // without the URL it quotes
		}
	}
	if cause == nil {
		cause = errors.New("invalid")
	}
	return redact.New(redact.DSN(dsn)...).Error(fmt.Errorf("store: the PostgreSQL DSN does not parse (it is not shown: it may hold a password): %w", cause))
}

// OpenSQLite opens (creating if need be) the SQLite database at path, or a
// private in-memory one for ":memory:". A file is put in WAL mode with a busy
// timeout, so readers never wait for the writer and writers wait for each
// other instead of failing; an in-memory database lives on one connection,
// which the Store keeps open until Close.
func OpenSQLite(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("store: open sqlite: bad path %q (want a file name without '?', or \":memory:\")", path)
	}
	memory := path == ":memory:"
	dsn := path
	if !memory {
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
		// BEGIN IMMEDIATE: a transaction takes the write lock up front (waiting
		// under busy_timeout) rather than failing when it upgrades a read.
		q.Set("_txlock", "immediate")
		dsn = path + "?" + q.Encode()
	}
	db, err := gorm.Open(sqlite.Open(dsn), gormConfig())
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite %s: %w", path, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, closeAfter(db, fmt.Errorf("store: open sqlite %s: %w", path, err))
	}
	if memory {
		// Every connection to ":memory:" is a database of its own, and it
		// vanishes with its connection: keep exactly one, forever.
		sqlDB.SetMaxOpenConns(1)
		sqlDB.SetMaxIdleConns(1)
		sqlDB.SetConnMaxLifetime(0)
		sqlDB.SetConnMaxIdleTime(0)
	}
	s, err := newStore(db, "sqlite", sqliteMaxParams, opts)
	if err != nil {
		return nil, closeAfter(db, err)
	}
	if err := s.Ping(ctx); err != nil {
		return nil, closeAfter(db, fmt.Errorf("store: open sqlite %s: %w", path, err))
	}
	return s, nil
}

func gormConfig() *gorm.Config {
	return &gorm.Config{
		// Save runs its own transaction; single statements need none.
		SkipDefaultTransaction: true,
		// Errors are returned to the caller, who logs them.
		Logger: logger.Discard,
		// Open pings with the caller's context instead.
		DisableAutomaticPing: true,
	}
}

func newStore(db *gorm.DB, dialect string, maxParams int, opts Options) (*Store, error) {
	table := opts.Table
	if table == "" {
		table = DefaultTable
	}
	if !tableName.MatchString(table) || table == partitionsTable {
		return nil, fmt.Errorf("store: bad table name %q (want [a-z_][a-z0-9_]*, at most 54 bytes, not %s)", table, partitionsTable)
	}
	batch := opts.BatchSize
	if batch < 0 {
		return nil, fmt.Errorf("store: bad batch size %d", batch)
	}
	if batch == 0 {
		batch = DefaultBatchSize
	}
	return &Store{
		db:        db,
		dialect:   dialect,
		table:     table,
		batchSize: batch,
		maxParams: maxParams,
		upsert:    mergeUpsert(table),
	}, nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.PingContext(ctx)
}

func closeAfter(db *gorm.DB, err error) error {
	if sqlDB, dbErr := db.DB(); dbErr == nil {
		_ = sqlDB.Close()
	}
	return err
}

// Close closes the database connections.
func (s *Store) Close() error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	if err := sqlDB.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// rowsPerInsert is the number of rows one upsert statement carries.
func (s *Store) rowsPerInsert() int {
	return max(1, min(s.batchSize, s.maxParams/columnsPerRow))
}

// Load returns the stored states of urls; urls not stored are missing from
// the map. It runs one query (more only past the driver's bind-parameter
// limit, about 32k urls in SQLite and 65k in PostgreSQL).
func (s *Store) Load(ctx context.Context, urls []string) (map[string]document.Document, error) {
	out := make(map[string]document.Document, len(urls))
	unique := make([]string, 0, len(urls))
	seen := make(map[string]struct{}, len(urls))
	for _, u := range urls {
		if _, dup := seen[u]; !dup {
			seen[u] = struct{}{}
			unique = append(unique, u)
		}
	}
	for start := 0; start < len(unique); start += s.maxParams {
		chunk := unique[start:min(start+s.maxParams, len(unique))]
		hashes := make([]any, len(chunk))
		for i, u := range chunk {
			hashes[i] = urlHash(u)
		}
		var rows []documentRow
		err := s.db.WithContext(ctx).Table(s.table).
			Where(clause.IN{Column: clause.Column{Name: "url_hash"}, Values: hashes}).
			Find(&rows).Error
		if err != nil {
			return nil, fmt.Errorf("store: load %d urls: %w", len(urls), err)
		}
		for _, r := range rows {
			out[r.URL] = r.document()
		}
	}
	return out, nil
}

// NoOffset is a Watermark's Offset before any sync: a claim records its
// epoch before the partition has synced anything.
const NoOffset = -1

// Save merges states into the table and, when mark is not nil, records the
// partition's watermark, all in one transaction. States of one url are first
// joined with document.Merge. If mark.Epoch is lower than the epoch stored
// for its partition, nothing is kept and the error wraps fencing.ErrFenced.
func (s *Store) Save(ctx context.Context, states []document.Document, mark *Watermark) error {
	rows := foldRows(states)
	if len(rows) == 0 && mark == nil {
		return nil
	}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if mark != nil {
			// First: a fenced writer stops before writing anything, and the
			// partition's row lock orders concurrent Saves of one partition.
			if err := writeWatermark(tx, *mark); err != nil {
				return err
			}
		}
		per := s.rowsPerInsert()
		for start := 0; start < len(rows); start += per {
			chunk := rows[start:min(start+per, len(rows))]
			if err := tx.Table(s.table).Clauses(s.upsert).Create(chunk).Error; err != nil {
				return fmt.Errorf("upsert rows %d-%d of %d: %w", start, start+len(chunk)-1, len(rows), err)
			}
		}
		return nil
	})
	if err != nil {
		if mark != nil {
			return fmt.Errorf("store: save %d states (pool %q partition %d offset %d epoch %d): %w",
				len(states), mark.Pool, mark.Partition, mark.Offset, mark.Epoch, err)
		}
		return fmt.Errorf("store: save %d states: %w", len(states), err)
	}
	return nil
}

// foldRows joins the states of each url with document.Merge and returns one
// row per url, sorted by key (a fixed lock order).
func foldRows(states []document.Document) []documentRow {
	if len(states) == 0 {
		return nil
	}
	merged := make(map[string]document.Document, len(states))
	for _, d := range states {
		if prev, ok := merged[d.URL]; ok {
			d = document.Merge(prev, d)
		}
		merged[d.URL] = d
	}
	rows := make([]documentRow, 0, len(merged))
	for _, d := range merged {
		rows = append(rows, rowOf(d))
	}
	sort.Slice(rows, func(i, j int) bool { return bytes.Compare(rows[i].URLHash, rows[j].URLHash) < 0 })
	return rows
}

func writeWatermark(tx *gorm.DB, mark Watermark) error {
	row := partitionRow{
		Pool:         mark.Pool,
		Partition:    mark.Partition,
		SyncedOffset: mark.Offset,
		Epoch:        orderedUint64(mark.Epoch),
		UpdatedAt:    time.Now().UTC(),
	}
	res := tx.Table(partitionsTable).Clauses(clause.OnConflict{
		Columns: []clause.Column{{Name: "pool"}, {Name: "partition"}},
		DoUpdates: clause.Assignments(map[string]any{
			"synced_offset": gorm.Expr(`CASE WHEN excluded."synced_offset" > "` + partitionsTable + `"."synced_offset" THEN excluded."synced_offset" ELSE "` + partitionsTable + `"."synced_offset" END`),
			"epoch":         gorm.Expr(`excluded."epoch"`),
			"updated_at":    gorm.Expr(`excluded."updated_at"`),
		}),
		Where: clause.Where{Exprs: []clause.Expression{
			clause.Expr{SQL: `"` + partitionsTable + `"."epoch" <= excluded."epoch"`},
		}},
	}).Create(&row)
	if res.Error != nil {
		return fmt.Errorf("write watermark: %w", res.Error)
	}
	if res.RowsAffected == 1 {
		return nil
	}
	// Refused: say by which epoch, read inside the same transaction.
	var stored []partitionRow
	err := tx.Table(partitionsTable).
		Where(`"pool" = ? AND "partition" = ?`, mark.Pool, mark.Partition).
		Limit(1).Find(&stored).Error
	if err == nil && len(stored) == 1 {
		return fmt.Errorf("write watermark: stored epoch is %d: %w", uint64(stored[0].Epoch), fencing.ErrFenced)
	}
	return fmt.Errorf("write watermark: %d rows affected: %w", res.RowsAffected, fencing.ErrFenced)
}

// Refused reports whether err is the database refusing the rows themselves
// — a value it cannot hold (SQLSTATE class 22: a character its encoding
// lacks, a value too long), a constraint they break (23), a limit they pass
// (54) — rather than failing to run: no retry stores those rows.
func Refused(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		class := pg.Code[:min(2, len(pg.Code))]
		return class == "22" || class == "23" || class == "54"
	}
	var lite interface{ Code() int } // SQLite's result codes
	if errors.As(err, &lite) {
		const tooBig, constraint, mismatch = 18, 19, 20
		switch lite.Code() & 0xff {
		case tooBig, constraint, mismatch:
			return true
		}
	}
	return false
}

// Empty reports whether the documents table holds no row at all: then a
// partition that never ran cannot have history anywhere.
func (s *Store) Empty(ctx context.Context) (bool, error) {
	var one []int
	if err := s.db.WithContext(ctx).Table(s.table).Select("1").Limit(1).Scan(&one).Error; err != nil {
		return false, fmt.Errorf("store: look for a row in %s: %w", s.table, err)
	}
	return len(one) == 0, nil
}

// Watermark returns the watermark stored for a pool's partition; found is
// false when none was ever written (its Offset may still be NoOffset).
func (s *Store) Watermark(ctx context.Context, pool string, partition int32) (w Watermark, found bool, err error) {
	var rows []partitionRow
	err = s.db.WithContext(ctx).Table(partitionsTable).
		Where(`"pool" = ? AND "partition" = ?`, pool, partition).
		Limit(1).Find(&rows).Error
	if err != nil {
		return Watermark{}, false, fmt.Errorf("store: read watermark of pool %q partition %d: %w", pool, partition, err)
	}
	if len(rows) == 0 {
		return Watermark{}, false, nil
	}
	r := rows[0]
	return Watermark{Pool: r.Pool, Partition: r.Partition, Offset: r.SyncedOffset, Epoch: uint64(r.Epoch)}, true, nil
}
