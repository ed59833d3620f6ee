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
// asks Redis for. With two pages saving and one read ahead, a pass holds
// some ten copies of a page at once; in a pod of 100 MiB, pages of 2 MiB
// kept the heap near its limit, and the collector ran so often that web
// pages went through a quarter slower than with 1 MiB (make bench,
// realistic documents; 512 KiB gained nothing more).
const PageBytes = 1 << 20

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

// savesInFlight is how many pages PostgreSQL stores at once, each in a
// transaction of its own. With one, PostgreSQL's backend idles while the
// executor encodes the next statement and the executor idles while
// PostgreSQL runs it; two keep both busy (BenchmarkSave vs
// BenchmarkSaveTwoAtOnce in executor/store: 1.4-1.6 times the rows per second
// on two cores). The pages of a pass hold different urls (HSCAN may return
// one twice; the second save then waits for the first and merges again),
// and each transaction locks its rows in one order, so two saves never
// deadlock.
const savesInFlight = 2

// Pass syncs everything that changed up to now and advances the watermark.
// It returns how many states it wrote. While PostgreSQL stores pages, the
// oldest stored one is marked clean and the next one read from Redis, so
// that PostgreSQL sets the pace. The page that carries the watermark is
// saved last, once every other page is stored.
func (s *Syncer) Pass(ctx context.Context, epoch uint64) (rows int, err error) {
	started := time.Now()
	defer s.updateLag(ctx)
	applied, hasApplied, _, err := s.State.BeginSync(ctx, epoch)
	if err != nil || !hasApplied {
		return 0, err
	}
	var saving []*pageSave // oldest first
	defer func() {
		for _, p := range saving { // after a failure: the goroutines end with their saves
			<-p.done
		}
	}()
	pages := s.State.SyncPages(epoch)
	page, last, err := pages.Next(ctx, s.nextPageStates(), PageBytes)
	for err == nil {
		s.sized(page)
		var mark *store.Watermark
		if last && (len(page) > 0 || !s.hasSynced || s.synced != applied) {
			mark = &store.Watermark{Pool: s.Pool, Partition: s.Part, Offset: applied, Epoch: epoch}
		}
		if len(page) == 0 && mark == nil {
			break
		}
		for mark != nil && len(saving) > 0 && err == nil {
			err = s.finishOldest(ctx, epoch, &saving, &rows)
		}
		if err != nil {
			break
		}
		saving = append(saving, s.startSave(ctx, page, mark))
		if last {
			break
		}
		page, last, err = pages.Next(ctx, s.nextPageStates(), PageBytes)
		if err == nil && len(saving) == savesInFlight {
			err = s.finishOldest(ctx, epoch, &saving, &rows)
		}
	}
	for len(saving) > 0 && err == nil {
		err = s.finishOldest(ctx, epoch, &saving, &rows)
	}
	if err != nil {
		return rows, err
	}
	s.Metrics.SyncSeconds.Observe(time.Since(started).Seconds())
	return rows, nil
}

// pageSave is a page being saved to PostgreSQL, with the watermark it
// carries (nil: none); done has the save's error once it returned.
type pageSave struct {
	states []document.Document
	mark   *store.Watermark
	done   chan error
}

func (s *Syncer) startSave(ctx context.Context, page []document.Document, mark *store.Watermark) *pageSave {
	p := &pageSave{states: page, mark: mark, done: make(chan error, 1)}
	go func() { p.done <- s.Store.Save(ctx, page, mark) }()
	return p
}

// finishOldest waits for the oldest save in flight and ends its page's
// sync (see saved), counting the states stored in rows.
func (s *Syncer) finishOldest(ctx context.Context, epoch uint64, saving *[]*pageSave, rows *int) error {
	p := (*saving)[0]
	saveErr := <-p.done
	*saving = (*saving)[1:]
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
