package syncer_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/fencing"
	"github.com/docexec/docexec/executor/metrics"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/executor/store"
	"github.com/docexec/docexec/executor/syncer"
	"github.com/docexec/docexec/internal/testenv"
)

type fixture struct {
	state *state.State
	store *store.Store
	epoch uint64
	next  int64
	pool  string
}

func newFixture(t *testing.T) *fixture {
	return newFixtureOn(t, testenv.Postgres(t))
}

// newFixtureOn is newFixture with PostgreSQL at dsn.
func newFixtureOn(t *testing.T, dsn string) *fixture {
	ctx := context.Background()
	pool := fmt.Sprintf("sync%x", rand.Uint64())
	s := state.New(testenv.Redis(t), state.Options{Pool: pool, Partition: 2})
	claim, err := s.Claim(ctx, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenPostgres(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return &fixture{state: s, store: st, epoch: claim.Epoch, pool: pool}
}

// apply merges versions of urls u0..u(n-1) with the given fetch time.
func (f *fixture) apply(t *testing.T, n int, fetch uint64) {
	t.Helper()
	updates := make([]state.Update, n)
	for i := range updates {
		updates[i] = state.Update{Emit: state.EmitNever, Doc: document.Document{URL: fmt.Sprintf("u%d", i), FetchTime: fetch, Text: fmt.Sprint(fetch)}}
	}
	f.next += int64(n)
	if _, err := f.state.Apply(context.Background(), f.epoch, updates, f.next, nil); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) syncer(s syncer.Store) *syncer.Syncer {
	return &syncer.Syncer{State: f.state, Store: s, Pool: f.pool, Part: 2, Batch: 100,
		Metrics: metrics.New(prometheus.NewRegistry()).Partition(f.pool, 2), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// check asserts PostgreSQL holds urls u0..u(n-1) at fetch and the
// watermark is at the applied offset, and Redis has nothing dirty.
func (f *fixture) check(t *testing.T, n int, fetch uint64) {
	t.Helper()
	ctx := context.Background()
	urls := make([]string, n)
	for i := range urls {
		urls[i] = fmt.Sprintf("u%d", i)
	}
	stored, err := f.store.Load(ctx, urls)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range urls {
		if stored[u].FetchTime != fetch {
			t.Fatalf("PostgreSQL has %+v for %s, want fetchTime %d", stored[u], u, fetch)
		}
	}
	mark, found, err := f.store.Watermark(ctx, f.pool, 2)
	if err != nil || !found || mark.Offset != f.next || mark.Epoch != f.epoch {
		t.Fatalf("watermark %+v (found %v, %v), want offset %d epoch %d", mark, found, err, f.next, f.epoch)
	}
	if dirty, _ := f.state.DirtyCount(ctx); dirty != 0 {
		t.Fatalf("%d states still dirty", dirty)
	}
}

func TestAPassStoresEachDirtyStateOnce(t *testing.T) {
	f := newFixture(t)
	f.apply(t, 250, 1)
	f.apply(t, 250, 2) // the same urls again: still 250 dirty states
	s := f.syncer(f.store)
	rows, err := s.Pass(context.Background(), f.epoch)
	if err != nil || rows != 250 {
		t.Fatalf("synced %d rows (%v), want 250", rows, err)
	}
	f.check(t, 250, 2)
	if rows, err := s.Pass(context.Background(), f.epoch); err != nil || rows != 0 {
		t.Fatalf("an idle pass synced %d rows (%v)", rows, err)
	}
}

// overlapping is a store that holds each Save until a second one is in
// flight (or a while has passed: a pass that saves one page at a time),
// and remembers the most saves it had at once and how many others ran
// beside each save of a watermark.
type overlapping struct {
	*store.Store
	mu              sync.Mutex
	inFlight, most  int
	besideWatermark []int
	two             chan struct{} // closed once two saves were in flight
	twoClosed       bool
}

func (s *overlapping) Save(ctx context.Context, states []document.Document, mark *store.Watermark) error {
	s.mu.Lock()
	s.inFlight++
	s.most = max(s.most, s.inFlight)
	if mark != nil {
		s.besideWatermark = append(s.besideWatermark, s.inFlight-1)
	}
	if s.inFlight == 2 && !s.twoClosed {
		close(s.two)
		s.twoClosed = true
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	select {
	case <-s.two:
	case <-time.After(5 * time.Second):
	}
	return s.Store.Save(ctx, states, mark)
}

func TestPagesAreSavedTwoAtOnceAndTheWatermarkAfterThem(t *testing.T) {
	f := newFixture(t)
	f.apply(t, 350, 4) // pages of 64 (sizes unknown yet), 100, 100 and 86
	saves := &overlapping{Store: f.store, two: make(chan struct{})}
	if _, err := f.syncer(saves).Pass(context.Background(), f.epoch); err != nil {
		t.Fatal(err)
	}
	if saves.most != 2 {
		t.Fatalf("at most %d pages saved at once, want 2", saves.most)
	}
	if len(saves.besideWatermark) != 1 || saves.besideWatermark[0] != 0 {
		t.Fatalf("the watermark was saved with %v other saves in flight, want once with none", saves.besideWatermark)
	}
	f.check(t, 350, 4)
}

// pages is a store that remembers the bytes of each page it saved.
type pages struct {
	*store.Store
	mu    sync.Mutex
	bytes []int
}

func (s *pages) Save(ctx context.Context, states []document.Document, mark *store.Watermark) error {
	n := 0
	for _, d := range states {
		n += len(d.URL) + len(d.Text)
	}
	s.mu.Lock()
	s.bytes = append(s.bytes, n)
	s.mu.Unlock()
	return s.Store.Save(ctx, states, mark)
}

func TestPagesOfLargeStatesHoldFewerOfThem(t *testing.T) {
	f := newFixture(t)
	text := strings.Repeat("w", syncer.PageBytes/20)
	for _, half := range [][2]int{{0, 50}, {50, 100}} { // a second pass knows the sizes
		updates := make([]state.Update, 0, 50)
		for i := range half[1] - half[0] {
			updates = append(updates, state.Update{Emit: state.EmitNever, Doc: document.Document{URL: fmt.Sprintf("u%d", half[0]+i), FetchTime: 1, Text: text}})
		}
		f.next += 50
		if _, err := f.state.Apply(context.Background(), f.epoch, updates, f.next, nil); err != nil {
			t.Fatal(err)
		}
		saved := &pages{Store: f.store}
		if _, err := f.syncer(saved).Pass(context.Background(), f.epoch); err != nil {
			t.Fatal(err)
		}
		// Batch is 100: a page by count alone would be all 50, 10 MB.
		if len(saved.bytes) < 2 {
			t.Fatalf("50 states of %d KB synced in %d pages, want pages of about %d KB", len(text)>>10, len(saved.bytes), syncer.PageBytes>>10)
		}
		for _, b := range saved.bytes {
			if b > syncer.PageBytes+len(text)+64 {
				t.Fatalf("a page of %d bytes, want at most %d and the state that crosses it", b, syncer.PageBytes)
			}
		}
	}
	f.check(t, 100, 1)
}

// failing is a store whose Save fails on call number failAt, before or
// after the real Save committed (a crash, or a lost acknowledgement).
type failing struct {
	*store.Store
	mu            sync.Mutex
	calls, failAt int
	afterCommit   bool
}

var errCrash = errors.New("crash")

func (s *failing) Save(ctx context.Context, states []document.Document, mark *store.Watermark) error {
	s.mu.Lock()
	s.calls++
	call := s.calls
	s.mu.Unlock()
	if call != s.failAt {
		return s.Store.Save(ctx, states, mark)
	}
	if s.afterCommit {
		if err := s.Store.Save(ctx, states, mark); err != nil {
			return err
		}
	}
	return errCrash
}

func TestACrashAtAnyPointOfAPassLosesNothing(t *testing.T) {
	for failAt := 1; failAt <= 4; failAt++ { // 350 states in batches of 100: 4 saves
		for _, afterCommit := range []bool{false, true} {
			t.Run(fmt.Sprintf("save %d fails, committed=%v", failAt, afterCommit), func(t *testing.T) {
				f := newFixture(t)
				f.apply(t, 350, 5)
				_, err := f.syncer(&failing{Store: f.store, failAt: failAt, afterCommit: afterCommit}).Pass(context.Background(), f.epoch)
				if !errors.Is(err, errCrash) {
					t.Fatalf("got %v, want the crash", err)
				}
				mark, found, _ := f.store.Watermark(context.Background(), f.pool, 2)
				if found && mark.Offset == f.next && !(afterCommit && failAt == 4) {
					t.Fatalf("the watermark reached %d before every state was stored", mark.Offset)
				}
				// A new executor's pass finishes the job.
				if _, err := f.syncer(f.store).Pass(context.Background(), f.epoch); err != nil {
					t.Fatal(err)
				}
				f.check(t, 350, 5)
			})
		}
	}
}

func TestChangesDuringAPassStayDirtyForTheNext(t *testing.T) {
	f := newFixture(t)
	f.apply(t, 150, 1)
	racing := &racingStore{Store: f.store, during: func() { f.apply(t, 150, 9) }}
	if _, err := f.syncer(racing).Pass(context.Background(), f.epoch); err != nil {
		t.Fatal(err)
	}
	if dirty, _ := f.state.DirtyCount(context.Background()); dirty != 150 {
		t.Fatalf("%d dirty after the pass, want the 150 changed during it", dirty)
	}
	// The watermark covers only what was applied when the pass began.
	if mark, _, _ := f.store.Watermark(context.Background(), f.pool, 2); mark.Offset != 150 {
		t.Fatalf("watermark %d after the first pass, want 150", mark.Offset)
	}
	if _, err := f.syncer(f.store).Pass(context.Background(), f.epoch); err != nil {
		t.Fatal(err)
	}
	f.check(t, 150, 9)
}

// racingStore changes the state once, during its first Save.
type racingStore struct {
	*store.Store
	once   sync.Once
	during func()
}

func (s *racingStore) Save(ctx context.Context, states []document.Document, mark *store.Watermark) error {
	s.once.Do(s.during)
	return s.Store.Save(ctx, states, mark)
}

func TestARedisWipeDuringAPassStopsIt(t *testing.T) {
	f := newFixture(t)
	f.apply(t, 350, 1)
	wiping := &racingStore{Store: f.store, during: func() { testenv.WipePool(t, testenv.Redis(t), f.pool) }}
	_, err := f.syncer(wiping).Pass(context.Background(), f.epoch)
	if !errors.Is(err, fencing.ErrLost) || !fencing.Classify(err).EndsTerm() {
		t.Fatalf("got %v, want a fatal ErrLost", err)
	}
	if mark, found, _ := f.store.Watermark(context.Background(), f.pool, 2); found && mark.Offset >= 0 {
		t.Fatalf("watermark %d written although 250 states were never stored", mark.Offset)
	}
}

func TestAFencedPassWritesNothing(t *testing.T) {
	f := newFixture(t)
	f.apply(t, 10, 1)
	if err := f.store.Save(context.Background(), nil, &store.Watermark{Pool: f.pool, Partition: 2, Epoch: f.epoch + 1}); err != nil {
		t.Fatal(err)
	}
	_, err := f.syncer(f.store).Pass(context.Background(), f.epoch)
	if !errors.Is(err, fencing.ErrFenced) || !fencing.Classify(err).EndsTerm() {
		t.Fatalf("got %v, want a fatal ErrFenced", err)
	}
	if dirty, _ := f.state.DirtyCount(context.Background()); dirty != 10 {
		t.Fatalf("%d dirty after a fenced pass, want all 10", dirty)
	}
}

// refusal is a state PostgreSQL refuses to store, and how it comes to.
type refusal struct {
	name string
	dsn  func(t *testing.T) string
	// setUp runs on the migrated store.
	setUp func(t *testing.T, st *store.Store, dsn string)
	bad   document.Document
}

var refusals = []refusal{
	{
		name: "a row that breaks a constraint",
		dsn:  func(t *testing.T) string { return testenv.Postgres(t) },
		setUp: func(t *testing.T, _ *store.Store, dsn string) {
			exec(t, dsn, `ALTER TABLE documents ADD CONSTRAINT refuse CHECK (url NOT LIKE '%refuse-me%')`)
		},
		bad: document.Document{URL: "https://refuse-me.example/", FetchTime: 7, Text: "t"},
	},
	{
		name:  "a character the database's encoding lacks",
		dsn:   func(t *testing.T) string { return testenv.PostgresDatabase(t, "LATIN1") },
		setUp: func(*testing.T, *store.Store, string) {},
		bad:   document.Document{URL: "https://ja.example/", FetchTime: 7, Text: "日本語のページ"},
	},
}

func exec(t *testing.T, dsn, stmt string) {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmt); err != nil {
		t.Fatal(err)
	}
}

func TestARowPostgreSQLRefusesIsReportedAndTheWatermarkAdvances(t *testing.T) {
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			dsn := tc.dsn(t)
			f := newFixtureOn(t, dsn)
			tc.setUp(t, f.store, dsn)
			f.apply(t, 120, 3) // two pages of 100: the bad state hides in the first
			bad := tc.bad
			f.next++
			if _, err := f.state.Apply(context.Background(), f.epoch, []state.Update{{Doc: bad, Emit: state.EmitNever}}, f.next, nil); err != nil {
				t.Fatal(err)
			}
			f.apply(t, 180, 3)
			s := f.syncer(f.store)
			var reported []document.Document
			var reasons []string
			s.Refused = func(_ context.Context, d document.Document, reason string) error {
				reported, reasons = append(reported, d), append(reasons, reason)
				return nil
			}
			rows, err := s.Pass(context.Background(), f.epoch)
			if err != nil || rows != 180 {
				t.Fatalf("synced %d rows (%v), want the 180 good ones", rows, err)
			}
			bad.FirstFetchTime = bad.FetchTime
			if len(reported) != 1 || reported[0] != bad || !strings.Contains(reasons[0], "SQLSTATE") {
				t.Fatalf("reported %+v (%q), want the bad state with PostgreSQL's reason", reported, reasons)
			}
			f.check(t, 180, 3) // the others stored, the watermark past it, nothing dirty
			if rows, err := s.Pass(context.Background(), f.epoch); err != nil || rows != 0 || len(reported) != 1 {
				t.Fatalf("the next pass synced %d rows (%v) and reported %d: the bad state must not come back", rows, err, len(reported))
			}
			if got, _ := f.state.Get(context.Background(), bad.URL); got[bad.URL] != bad {
				t.Fatalf("Redis holds %+v, want the refused state kept", got[bad.URL])
			}
		})
	}
}

// unreachable is PostgreSQL that answers reads but fails every write, and
// says when one was tried.
type unreachable struct {
	*store.Store
	saves chan struct{}
}

func (s *unreachable) Save(ctx context.Context, _ []document.Document, _ *store.Watermark) error {
	select {
	case s.saves <- struct{}{}:
	case <-ctx.Done():
	}
	return errCrash
}

// TestTheSyncLagOfATermWhoseSyncsAllFailIsReported starts a term on a
// partition synced up to offset 100 and applied up to 150, whose every
// write to PostgreSQL fails: the lag must read 50 after its first pass,
// though this term never wrote a watermark.
func TestTheSyncLagOfATermWhoseSyncsAllFailIsReported(t *testing.T) {
	f := newFixture(t)
	f.apply(t, 100, 1)
	if _, err := f.syncer(f.store).Pass(context.Background(), f.epoch); err != nil {
		t.Fatal(err)
	}
	f.apply(t, 50, 2)
	down := &unreachable{Store: f.store, saves: make(chan struct{})}
	s := f.syncer(down)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, f.epoch, time.Millisecond) }()
	<-down.saves // the first pass fails
	<-down.saves // the second: the first pass measured the lag before
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(s.Metrics.SyncLag); got != 50 {
		t.Fatalf("sync lag %v, want 50 (applied 150, PostgreSQL's watermark 100)", got)
	}
}
