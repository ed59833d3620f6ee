package store

import (
	"context"
	"crypto/sha256"
	"database/sql/driver"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/docexec/docexec/executor/document"
)

// orderedUint64 is a uint64 as the database stores it: the signed 64-bit
// integer int64(x ^ 1<<63), whose signed order is x's unsigned order (see the
// package doc). This type is the only place that maps in either direction.
type orderedUint64 uint64

const signBit = uint64(1) << 63

// Value implements driver.Valuer.
func (x orderedUint64) Value() (driver.Value, error) {
	return int64(uint64(x) ^ signBit), nil
}

// Scan implements sql.Scanner.
func (x *orderedUint64) Scan(src any) error {
	v, ok := src.(int64)
	if !ok {
		return fmt.Errorf("store: scan %T into an ordered uint64: want int64", src)
	}
	*x = orderedUint64(uint64(v) ^ signBit)
	return nil
}

// documentRow is a row of the documents table.
type documentRow struct {
	URLHash        []byte        `gorm:"column:url_hash;primaryKey"`
	URL            string        `gorm:"column:url"`
	PubDate        orderedUint64 `gorm:"column:pub_date"`
	FetchTime      orderedUint64 `gorm:"column:fetch_time"`
	Text           string        `gorm:"column:text"`
	FirstFetchTime orderedUint64 `gorm:"column:first_fetch_time"`
}

// urlHash is the key of a url's row: the SHA-256 of the url. A btree index
// entry holds at most about 2,700 bytes, and urls come longer; 32 bytes of
// hash fit, and index as fast whatever the url.
func urlHash(url string) []byte {
	h := sha256.Sum256([]byte(url))
	return h[:]
}

func rowOf(d document.Document) documentRow {
	return documentRow{
		URLHash:        urlHash(d.URL),
		URL:            d.URL,
		PubDate:        orderedUint64(d.PubDate),
		FetchTime:      orderedUint64(d.FetchTime),
		Text:           d.Text,
		FirstFetchTime: orderedUint64(d.FirstFetchTime),
	}
}

func (r documentRow) document() document.Document {
	return document.Document{
		URL:            r.URL,
		PubDate:        uint64(r.PubDate),
		FetchTime:      uint64(r.FetchTime),
		Text:           r.Text,
		FirstFetchTime: uint64(r.FirstFetchTime),
	}
}

// partitionRow is a row of docexec_partitions.
type partitionRow struct {
	Pool         string        `gorm:"column:pool;primaryKey"`
	Partition    int32         `gorm:"column:partition;primaryKey"`
	SyncedOffset int64         `gorm:"column:synced_offset"`
	Epoch        orderedUint64 `gorm:"column:epoch"`
	UpdatedAt    time.Time     `gorm:"column:updated_at"`
}

// mergeUpsert returns the ON CONFLICT clause that merges an incoming state
// (excluded.*) into the stored row of table.
//
// The CASE expressions mirror document.Merge (newer and older there) and must
// change together with it; the shared reference cases test both. They compare
// mapped values (orderedUint64), whose signed order is the unsigned order,
// and text bytewise (COLLATE "C" in PostgreSQL, BINARY in SQLite). SET
// expressions all see the row as it was before the update, so fetch_time and
// text are decided on the same comparison, as are first_fetch_time and
// pub_date. The WHERE leaves a row that the state would not change alone (no
// new row version, no write).
func mergeUpsert(table string) clause.OnConflict {
	t := `"` + table + `"`
	// The incoming state's newest version beats the stored one.
	newer := `(excluded."fetch_time" > ` + t + `."fetch_time" OR (excluded."fetch_time" = ` + t + `."fetch_time" AND excluded."text" > ` + t + `."text"))`
	// The incoming state's oldest version beats the stored one.
	older := `(excluded."first_fetch_time" < ` + t + `."first_fetch_time" OR (excluded."first_fetch_time" = ` + t + `."first_fetch_time" AND excluded."pub_date" < ` + t + `."pub_date"))`
	pick := func(cond, column string) clause.Assignment {
		return clause.Assignment{
			Column: clause.Column{Name: column},
			Value:  gorm.Expr(`CASE WHEN ` + cond + ` THEN excluded."` + column + `" ELSE ` + t + `."` + column + `" END`),
		}
	}
	return clause.OnConflict{
		Columns: []clause.Column{{Name: "url_hash"}},
		DoUpdates: clause.Set{
			pick(newer, "fetch_time"),
			pick(newer, "text"),
			pick(older, "first_fetch_time"),
			pick(older, "pub_date"),
		},
		Where: clause.Where{Exprs: []clause.Expression{clause.Expr{SQL: newer + ` OR ` + older}}},
	}
}

// ddl returns the statements that create the schema if it is missing. The
// dialects differ only in collation and timestamp type names (and in the
// readable views, which only PostgreSQL gets).
func (s *Store) ddl() []string {
	collate, timestamp, bytes := "", "datetime", "blob"
	if s.dialect == "postgres" {
		collate, timestamp, bytes = ` COLLATE "C"`, "timestamptz", "bytea"
	}
	stmts := []string{
		`CREATE TABLE IF NOT EXISTS "` + s.table + `" (
	"url_hash"         ` + bytes + ` NOT NULL PRIMARY KEY,
	"url"              text` + collate + ` NOT NULL,
	"pub_date"         bigint NOT NULL,
	"fetch_time"       bigint NOT NULL,
	"text"             text` + collate + ` NOT NULL,
	"first_fetch_time" bigint NOT NULL
)`,
		`CREATE TABLE IF NOT EXISTS "` + partitionsTable + `" (
	"pool"          text` + collate + ` NOT NULL,
	"partition"     integer NOT NULL,
	"synced_offset" bigint NOT NULL,
	"epoch"         bigint NOT NULL,
	"updated_at"    ` + timestamp + ` NOT NULL,
	PRIMARY KEY ("pool", "partition")
)`,
	}
	if s.dialect == "postgres" {
		// The views undo orderedUint64's mapping: x = s + 2^63.
		const unmapped = `::numeric + 9223372036854775808`
		stmts = append(stmts,
			`CREATE OR REPLACE VIEW "`+s.table+`_readable" AS SELECT
	"url",
	"pub_date"`+unmapped+` AS "pub_date",
	"fetch_time"`+unmapped+` AS "fetch_time",
	"text",
	"first_fetch_time"`+unmapped+` AS "first_fetch_time"
FROM "`+s.table+`"`,
			`COMMENT ON VIEW "`+s.table+`_readable" IS 'docexec documents with their real unsigned values; the table stores each uint64 x as the bigint x - 2^63'`,
			`CREATE OR REPLACE VIEW "`+partitionsTable+`_readable" AS SELECT
	"pool",
	"partition",
	"synced_offset",
	"epoch"`+unmapped+` AS "epoch",
	"updated_at"
FROM "`+partitionsTable+`"`,
		)
	}
	return stmts
}

// Migrate creates the tables (and in PostgreSQL the readable views) if they
// are missing. It is idempotent, and safe when many executors run it at once.
func (s *Store) Migrate(ctx context.Context) error {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if s.dialect == "postgres" {
			// Concurrent CREATE ... IF NOT EXISTS and CREATE OR REPLACE VIEW
			// can fail on catalog conflicts: take turns.
			if err := tx.Exec(`SELECT pg_advisory_xact_lock(hashtext('docexec/store.Migrate'))`).Error; err != nil {
				return err
			}
		}
		if err := s.keyByHash(tx); err != nil {
			return err
		}
		for _, stmt := range s.ddl() {
			if err := tx.Exec(stmt).Error; err != nil {
				return fmt.Errorf("%s: %w", firstLine(stmt), err)
			}
		}
		if s.dialect == "postgres" {
			return compressTextsWithLZ4(tx, s.table)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: migrate table %s: %w", s.table, err)
	}
	return nil
}

// compressTextsWithLZ4 has PostgreSQL compress the texts of new rows with
// lz4 instead of its default pglz, where the server has lz4 (PostgreSQL 14
// and later, built with it): web pages are TOASTed, and Save stored them at
// ~100 MB/s with pglz against ~245 with lz4 (BenchmarkSaveWebPages). Rows
// stored before keep their compression. The column is altered once: the
// statement locks the table.
func compressTextsWithLZ4(tx *gorm.DB, table string) error {
	lz4, err := hasLZ4(tx)
	if err != nil || !lz4 {
		return err
	}
	var current string
	err = tx.Raw(`SELECT attcompression::text FROM pg_attribute WHERE attrelid = ?::regclass AND attname = 'text'`, `"`+table+`"`).Scan(&current).Error
	if err != nil || current == "l" {
		return err
	}
	if err := tx.Exec(`ALTER TABLE "` + table + `" ALTER COLUMN "text" SET COMPRESSION lz4`).Error; err != nil {
		return fmt.Errorf("compress the texts of %s with lz4: %w", table, err)
	}
	return nil
}

// hasLZ4 says whether the PostgreSQL server can compress with lz4.
func hasLZ4(db *gorm.DB) (bool, error) {
	var lz4 bool
	err := db.Raw(`SELECT EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals))`).Scan(&lz4).Error
	return lz4, err
}

// keyByHash moves a documents table of the first layout, keyed by the url
// itself (which fails for urls longer than an index entry), to the key
// url_hash. SQLite has no SHA-256 to do it in SQL; its databases are local
// mode's scratch copies, so it says to start a new one instead.
func (s *Store) keyByHash(tx *gorm.DB) error {
	m := tx.Migrator()
	if !m.HasTable(s.table) || m.HasColumn(s.table, "url_hash") {
		return nil
	}
	if s.dialect != "postgres" {
		return fmt.Errorf("table %s was made by an older docexec (keyed by url): use a new SQLite file", s.table)
	}
	var pkey string
	if err := tx.Raw(`SELECT conname FROM pg_constraint WHERE conrelid = ?::regclass AND contype = 'p'`, `"`+s.table+`"`).Scan(&pkey).Error; err != nil {
		return fmt.Errorf("find the primary key of %s: %w", s.table, err)
	}
	t := `"` + s.table + `"`
	for _, stmt := range []string{
		`ALTER TABLE ` + t + ` ADD COLUMN "url_hash" bytea`,
		`UPDATE ` + t + ` SET "url_hash" = sha256(convert_to("url", 'UTF8'))`,
		`ALTER TABLE ` + t + ` ALTER COLUMN "url_hash" SET NOT NULL`,
		`ALTER TABLE ` + t + ` DROP CONSTRAINT "` + pkey + `"`,
		`ALTER TABLE ` + t + ` ADD PRIMARY KEY ("url_hash")`,
	} {
		if err := tx.Exec(stmt).Error; err != nil {
			return fmt.Errorf("key %s by url hash: %s: %w", s.table, stmt, err)
		}
	}
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
