package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/metrics"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/executor/store"
	"github.com/docexec/docexec/executor/syncer"
)

// syncState is the i-th state of the sync measurements: fresh urls, texts
// of 150 bytes.
func syncState(i int) document.Document {
	return document.Document{URL: fmt.Sprintf("https://sync.example/%d", i), PubDate: uint64(i), FetchTime: uint64(i),
		FirstFetchTime: uint64(i), Text: strings.Repeat("x", 150)}
}

// syncRun is one comparison of the sync with a raw batched upsert.
type syncRun struct{ syncPerSec, rawPerSec float64 }

func (r syncRun) ratio() float64 { return r.syncPerSec / r.rawPerSec }

// compareSync times a sync pass of rows states and a raw batched upsert of
// the same rows, the i-th time (each in tables of its own).
func compareSync(ctx context.Context, redis rueidis.Client, dsn string, rows, i int) (syncRun, error) {
	synced, syncTime, err := syncRate(ctx, redis, dsn, rows, i)
	if err != nil {
		return syncRun{}, fmt.Errorf("sync: %w", err)
	}
	if synced != rows {
		return syncRun{}, fmt.Errorf("sync: %d rows synced of %d", synced, rows)
	}
	raw, err := rawUpsert(ctx, dsn, rows, i)
	if err != nil {
		return syncRun{}, fmt.Errorf("raw upsert: %w", err)
	}
	return syncRun{syncPerSec: float64(rows) / syncTime.Seconds(), rawPerSec: float64(rows) / raw.Seconds()}, nil
}

// syncRate makes rows dirty states in Redis and times one sync pass of
// them to PostgreSQL, the i-th time.
func syncRate(ctx context.Context, redis rueidis.Client, dsn string, rows, i int) (int, time.Duration, error) {
	st, err := store.OpenPostgres(ctx, dsn, store.Options{Table: fmt.Sprintf("sync_bench_%d", i)})
	if err != nil {
		return 0, 0, err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return 0, 0, err
	}
	pool := fmt.Sprintf("bench-sync-%d", i)
	s := state.New(redis, state.Options{Pool: pool, Partition: 0})
	claim, err := s.Claim(ctx, 0, true)
	if err != nil {
		return 0, 0, err
	}
	for from := 0; from < rows; from += batch {
		updates := make([]state.Update, 0, batch)
		for j := from; j < min(from+batch, rows); j++ {
			updates = append(updates, state.Update{Emit: state.EmitNever, Doc: syncState(j)})
		}
		if _, err := s.Apply(ctx, claim.Epoch, updates, int64(from+batch), nil); err != nil {
			return 0, 0, err
		}
	}
	sy := &syncer.Syncer{State: s, Store: st, Pool: pool, Metrics: metrics.New(prometheus.NewRegistry()).Partition("bench-sync", 0),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	start := time.Now()
	n, err := sy.Pass(ctx, claim.Epoch)
	return n, time.Since(start), err
}

// rawUpsert times the same rows written straight to PostgreSQL: a table of
// the same columns, multi-row INSERT ... ON CONFLICT DO UPDATE of
// syncer.DefaultBatchSize rows, one transaction each, no merge in SQL, no
// Redis, no ORM: the floor the sync is measured against; the i-th time.
func rawUpsert(ctx context.Context, dsn string, rows, i int) (time.Duration, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	table := fmt.Sprintf("raw_upsert_%d", i)
	if _, err := db.ExecContext(ctx, `CREATE TABLE `+table+` (url_hash bytea PRIMARY KEY, url text COLLATE "C" NOT NULL,
		pub_date bigint NOT NULL, fetch_time bigint NOT NULL, text text COLLATE "C" NOT NULL, first_fetch_time bigint NOT NULL)`); err != nil {
		return 0, err
	}
	start := time.Now()
	for from := 0; from < rows; from += syncer.DefaultBatchSize {
		var q strings.Builder
		q.WriteString(`INSERT INTO ` + table + ` VALUES `)
		var args []any
		for row := from; row < min(from+syncer.DefaultBatchSize, rows); row++ {
			d := syncState(row)
			hash := sha256.Sum256([]byte(d.URL))
			if row > from {
				q.WriteByte(',')
			}
			n := len(args)
			fmt.Fprintf(&q, "($%d,$%d,$%d,$%d,$%d,$%d)", n+1, n+2, n+3, n+4, n+5, n+6)
			args = append(args, hash[:], d.URL, int64(d.PubDate), int64(d.FetchTime), d.Text, int64(d.FirstFetchTime))
		}
		q.WriteString(` ON CONFLICT (url_hash) DO UPDATE SET url = EXCLUDED.url, pub_date = EXCLUDED.pub_date,
			fetch_time = EXCLUDED.fetch_time, text = EXCLUDED.text, first_fetch_time = EXCLUDED.first_fetch_time`)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			tx.Rollback() //nolint:errcheck // the error is the insert's
			return 0, err
		}
		if err := tx.Commit(); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// syncLag watches how far PostgreSQL's watermark of a partition trails its
// applied offset in Redis while an executor runs: for each sample, how
// long ago the applied offset first passed the watermark of that moment.
type syncLag struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	max    time.Duration
	err    error
}

func watchSyncLag(ctx context.Context, redis rueidis.Client, dsn, pool string) (*syncLag, error) {
	st, err := store.OpenPostgres(ctx, dsn, store.Options{})
	if err != nil {
		return nil, err
	}
	if err := st.Migrate(ctx); err != nil { // before the executor's, which is idempotent
		st.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	l := &syncLag{cancel: cancel}
	s := state.New(redis, state.Options{Pool: pool, Partition: 0})
	type passed struct {
		offset int64
		at     time.Time
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer st.Close()
		var history []passed // applied offsets, increasing, with when they were first seen
		for ctx.Err() == nil {
			now := time.Now()
			applied, _, err := s.Applied(ctx)
			if err == nil && (len(history) == 0 || applied > history[len(history)-1].offset) {
				history = append(history, passed{applied, now})
			}
			mark, found, werr := st.Watermark(ctx, pool, 0)
			if err = errors.Join(err, werr); err != nil {
				if ctx.Err() == nil {
					l.err = err
				}
				return
			}
			synced := int64(0)
			if found {
				synced = mark.Offset
			}
			for _, h := range history { // the first applied offset beyond the watermark
				if h.offset > synced {
					l.max = max(l.max, now.Sub(h.at))
					break
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return l, nil
}

// stop ends the watch and returns the largest lag seen.
func (l *syncLag) stop() (time.Duration, error) {
	l.cancel()
	l.wg.Wait()
	return l.max, l.err
}

// freshSchema creates a schema for this run and returns a DSN using it.
func freshSchema(dsn string) (string, func(), error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return "", nil, err
	}
	schema := fmt.Sprintf("docexec_bench_%x", rand.Uint32())
	if _, err := db.Exec(`CREATE SCHEMA ` + schema); err != nil {
		db.Close()
		return "", nil, err
	}
	u, err := url.Parse(dsn)
	if err != nil {
		db.Close()
		return "", nil, err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), func() { db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); db.Close() }, nil
}
