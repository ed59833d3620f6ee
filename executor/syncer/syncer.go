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
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/fencing"
	"github.com/docexec/docexec/executor/health"
	"github.com/docexec/docexec/executor/metrics"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/executor/store"
)

// DefaultBatchSize is the number of states per transaction.
const DefaultBatchSize = 1000

// PageBytes is about the most bytes of texts one transaction carries: a
// page ends with the state whose text reaches it, so that a page's copies
// in memory (read from Redis, encoded for PostgreSQL) stay a few times
// this. The bytes of the last page also set how many urls the next one
// asks Redis for.
const PageBytes = 2 << 20

// firstPageStates is the count of the first page, whose states' size is not
// known yet: 64 web pages of up to a megabyte are bearable.
const firstPageStates = 64

// Store is the durable copy (store.Store).
type Store interface {
	Save(ctx context.Context, states []document.Document, mark *store.Watermark) error
	Watermark(ctx context.Context, pool string, partition int32) (store.Watermark, bool, error)
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
	// Health hears of failed passes and of the one after them (nil: none).
	Health *health.Health
	// Refused reports a state that PostgreSQL refuses to store (a
	// character its encoding lacks, a constraint): the pass sets it aside
	// and goes on. Its error fails the pass (the state is retried).
	Refused func(ctx context.Context, d document.Document, reason string) error

	// synced is the watermark last written, when hasSynced.
	synced    int64
	hasSynced bool
	// stored is the watermark PostgreSQL held when Run started, which the
	// lag is measured from until this term writes one (storedKnown).
	stored      int64
	storedKnown bool
	// pageStates is the states to read in the next page, from the bytes of
	// the last; 0 before any (then firstPageStates).
	pageStates int
}

// Pass syncs everything that changed up to now and advances the watermark.
// It returns how many states it wrote. While PostgreSQL stores a page, the
// last page is marked clean and the next one read from Redis, so that
// PostgreSQL sets the pace.
func (s *Syncer) Pass(ctx context.Context, epoch uint64) (int, error) {
	started := time.Now()
	defer s.updateLag(ctx)
	applied, hasApplied, _, err := s.State.BeginSync(ctx, epoch)
	if err != nil || !hasApplied {
		return 0, err
	}
	rows := 0
	pages := s.State.SyncPages(epoch)
	page, last, err := pages.Next(ctx, s.nextPageStates(), PageBytes)
	var stored *storedPage // saved in PostgreSQL, not marked clean yet
	for err == nil {
		s.sized(page)
		var mark *store.Watermark
		if last && (len(page) > 0 || !s.hasSynced || s.synced != applied) {
			mark = &store.Watermark{Pool: s.Pool, Partition: s.Part, Offset: applied, Epoch: epoch}
		}
		if len(page) == 0 && mark == nil {
			break
		}
		saving := make(chan error, 1)
		go func() { saving <- s.Store.Save(ctx, page, mark) }()
		var next []document.Document
		var nextLast bool
		if stored != nil {
			err = s.finish(ctx, epoch, stored, nil, &rows)
		}
		if err == nil && !last {
			next, nextLast, err = pages.Next(ctx, s.nextPageStates(), PageBytes)
		}
		saveErr := <-saving
		if err != nil {
			return rows, err
		}
		stored = &storedPage{page, mark}
		if saveErr != nil {
			// Refused rows are set aside by saving the page in parts, and
			// nothing else is saved meanwhile: the watermark goes last.
			if err := s.finish(ctx, epoch, stored, saveErr, &rows); err != nil {
				return rows, err
			}
			stored = nil
		}
		if last {
			break
		}
		page, last = next, nextLast
	}
	if err != nil {
		return rows, err
	}
	if stored != nil {
		if err := s.finish(ctx, epoch, stored, nil, &rows); err != nil {
			return rows, err
		}
	}
	s.Metrics.SyncSeconds.Observe(time.Since(started).Seconds())
	return rows, nil
}

// storedPage is a page saved to PostgreSQL, with the watermark it carried
// (nil: none).
type storedPage struct {
	states []document.Document
	mark   *store.Watermark
}

// finish ends the sync of a page whose save returned saveErr (see saved)
// and counts the states stored in rows.
func (s *Syncer) finish(ctx context.Context, epoch uint64, p *storedPage, saveErr error, rows *int) error {
	saved, err := s.saved(ctx, epoch, p.states, p.mark, saveErr)
	if err != nil {
		return err
	}
	*rows += saved
	if p.mark != nil {
		s.synced, s.hasSynced = p.mark.Offset, true
	}
	return nil
}

// nextPageStates is how many states the next page reads: Batch, or fewer
// when states are large.
func (s *Syncer) nextPageStates() int {
	limit := s.Batch
	if limit <= 0 {
		limit = DefaultBatchSize
	}
	if s.pageStates > 0 {
		return min(limit, s.pageStates)
	}
	return min(limit, firstPageStates)
}

// sized learns from a page how many states fit PageBytes.
func (s *Syncer) sized(page []document.Document) {
	bytes := 0
	for _, d := range page {
		bytes += len(d.URL) + len(d.Text)
	}
	if len(page) > 0 && bytes > 0 {
		s.pageStates = max(1, PageBytes*len(page)/bytes)
	}
}

// saved ends the save of a page and the watermark in one transaction,
// which returned err: when PostgreSQL refused rows of it, they are found by
// halving the page, reported and set aside, and the rest is stored (one bad
// row must not hold the partition's sync, and its watermark, back for
// good); the stored states are marked clean. It returns how many it stored.
func (s *Syncer) saved(ctx context.Context, epoch uint64, page []document.Document, mark *store.Watermark, err error) (int, error) {
	refused := []refusedState(nil)
	if store.Refused(err) {
		if refused, err = s.isolate(ctx, page); err == nil && mark != nil {
			err = s.Store.Save(ctx, nil, mark)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("syncer: partition %d: %w", s.Part, err)
	}
	var bad []document.Document
	for _, r := range refused {
		s.Log.Error("PostgreSQL refused a state; it stays in Redis only and goes to the dead-letter topic",
			"url", r.state.URL, "bytes", len(r.state.Text), "err", r.err)
		if err := s.Refused(ctx, r.state, "PostgreSQL refused the state: "+r.err.Error()); err != nil {
			return 0, fmt.Errorf("syncer: partition %d: report a refused state: %w", s.Part, err)
		}
		bad = append(bad, r.state)
	}
	if err := s.State.MarkRefused(ctx, epoch, bad); err != nil {
		return 0, err
	}
	good := slices.DeleteFunc(page, func(d document.Document) bool { return slices.Contains(bad, d) })
	if err := s.State.MarkClean(ctx, epoch, good); err != nil {
		return 0, err
	}
	s.Metrics.SyncedRows.Add(float64(len(good)))
	s.Metrics.SyncRefused.Add(float64(len(bad)))
	return len(good), nil
}

type refusedState struct {
	state document.Document
	err   error
}

// isolate saves page in halves, down to the single states PostgreSQL
// refuses, and returns those; any other failure stops it.
func (s *Syncer) isolate(ctx context.Context, page []document.Document) ([]refusedState, error) {
	err := s.Store.Save(ctx, page, nil)
	switch {
	case err == nil:
		return nil, nil
	case !store.Refused(err):
		return nil, err
	case len(page) == 1:
		return []refusedState{{page[0], err}}, nil
	}
	half := len(page) / 2
	first, err := s.isolate(ctx, page[:half])
	if err != nil {
		return nil, err
	}
	second, err := s.isolate(ctx, page[half:])
	return append(first, second...), err
}

// Run syncs every interval until ctx ends. A failed pass (PostgreSQL down)
// is logged and retried next interval while dirty states wait in Redis;
// losing the partition (fenced, Redis lost) ends Run.
func (s *Syncer) Run(ctx context.Context, epoch uint64, interval time.Duration) error {
	// Read now, while PostgreSQL was just reached to claim the partition:
	// a sync failing from the term's first pass on shows its lag.
	if mark, found, err := s.Store.Watermark(ctx, s.Pool, s.Part); err == nil && found && mark.Offset != store.NoOffset {
		s.stored, s.storedKnown = mark.Offset, true
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		_, err := s.Pass(ctx, epoch)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil // stopped mid-pass: the owner runs a final pass
		case fencing.Classify(err).EndsTerm():
			return err
		}
		// A failed pass is retried next interval; dirty states wait in Redis.
		s.Health.Set("sync", err)
	}
}

// updateLag measures how far PostgreSQL's watermark is behind Redis, after
// every pass, failed or not.
func (s *Syncer) updateLag(ctx context.Context) {
	applied, found, err := s.State.Applied(ctx)
	switch {
	case err != nil || !found:
	case s.hasSynced:
		s.Metrics.SyncLag.Set(float64(applied - s.synced))
	case s.storedKnown:
		s.Metrics.SyncLag.Set(float64(applied - s.stored))
	}
}
