// Package syncer moves a partition's changed states from Redis to
// PostgreSQL: only the dirty ones, in url-unique batches, each batch one
// transaction of merge-upserts (so a late or repeated write never moves a
// row backwards). Its cost is O(changes), not O(keyspace).
//
// The partition's synced-offset watermark advances only once every change
// made below an applied offset is stored: a pass sets aside the urls dirty
// so far together with the applied offset (state.BeginSync), drains them,
// and writes that offset with the last batch. A crash anywhere leaves the
// urls set aside and the old watermark in place: the next pass repeats the
// writes harmlessly.
package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/metrics"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/executor/store"
)

// DefaultBatchSize is the number of states per transaction.
const DefaultBatchSize = 1000

// Store is the durable copy (store.Store).
type Store interface {
	Save(ctx context.Context, states []document.Document, mark *store.Watermark) error
}

// Syncer syncs one partition.
type Syncer struct {
	State   *state.State
	Store   Store
	Pool    string
	Part    int32
	Batch   int // states per transaction; DefaultBatchSize when 0
	Metrics *metrics.Partition
	Log     *slog.Logger

	// synced is the watermark last written, when hasSynced.
	synced    int64
	hasSynced bool
}

// Pass syncs everything that changed up to now and advances the watermark.
// It returns how many states it wrote.
func (s *Syncer) Pass(ctx context.Context, epoch uint64) (int, error) {
	started := time.Now()
	defer s.updateLag(ctx)
	applied, hasApplied, _, err := s.State.BeginSync(ctx, epoch)
	if err != nil || !hasApplied {
		return 0, err
	}
	limit := s.Batch
	if limit <= 0 {
		limit = DefaultBatchSize
	}
	rows := 0
	for {
		page, last, err := s.State.SyncPage(ctx, epoch, limit)
		if err != nil {
			return rows, err
		}
		var mark *store.Watermark
		if last && (len(page) > 0 || !s.hasSynced || s.synced != applied) {
			mark = &store.Watermark{Pool: s.Pool, Partition: s.Part, Offset: applied, Epoch: epoch}
		}
		if len(page) == 0 && mark == nil {
			break
		}
		if err := s.Store.Save(ctx, page, mark); err != nil {
			return rows, fmt.Errorf("syncer: partition %d: %w", s.Part, err)
		}
		if err := s.State.MarkClean(ctx, epoch, page); err != nil {
			return rows, err
		}
		rows += len(page)
		s.Metrics.SyncedRows.Add(float64(len(page)))
		if mark != nil {
			s.synced, s.hasSynced = mark.Offset, true
		}
		if last {
			break
		}
	}
	s.Metrics.SyncSeconds.Observe(time.Since(started).Seconds())
	return rows, nil
}

// Run syncs every interval until ctx ends. A failed pass (PostgreSQL down)
// is logged and retried next interval while dirty states wait in Redis;
// losing the partition (fenced, Redis lost) ends Run.
func (s *Syncer) Run(ctx context.Context, epoch uint64, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := s.Pass(ctx, epoch); err != nil {
			if ctx.Err() != nil {
				return nil // stopped mid-pass: the owner runs a final pass
			}
			if Fatal(err) {
				return err
			}
			s.Log.Warn("Sync pass failed; dirty states wait in Redis", "err", err)
		}
	}
}

// updateLag measures how far PostgreSQL's watermark is behind Redis.
func (s *Syncer) updateLag(ctx context.Context) {
	applied, found, err := s.State.Applied(ctx)
	if err == nil && found && s.hasSynced {
		s.Metrics.SyncLag.Set(float64(applied - s.synced))
	}
}

// Fatal reports errors after which this executor must stop using the
// partition.
func Fatal(err error) bool {
	return errors.Is(err, state.ErrFenced) || errors.Is(err, state.ErrLost) || errors.Is(err, store.ErrFenced)
}
