package state_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"golang.org/x/sync/errgroup"
	"pgregory.net/rapid"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/document/documenttest"
	"github.com/docexec/docexec/executor/fencing"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/internal/docgen"
	"github.com/docexec/docexec/internal/testenv"
)

// servers runs a test against the real redis-server, against a Redis
// Cluster of three masters (a partition's keys share one slot, its scripts
// run on one node) and against miniredis (local mode's Redis runs the same
// scripts in another Lua).
func servers(t *testing.T, test func(t *testing.T, c rueidis.Client)) {
	t.Run("redis-server", func(t *testing.T) { test(t, testenv.Redis(t)) })
	t.Run("redis-cluster", func(t *testing.T) { test(t, testenv.OwnRedisCluster(t).Client(t)) })
	t.Run("miniredis", func(t *testing.T) { test(t, testenv.MiniRedis(t)) })
}

// fresh returns the state of a new partition nobody else uses, claimed,
// and its pool.
func fresh(t testing.TB, c rueidis.Client, complete bool) (*state.State, uint64, string) {
	t.Helper()
	pool := fmt.Sprintf("test-%x", rand.Uint64())
	s := state.New(c, state.Options{Pool: pool, Partition: 3})
	claim, err := s.Claim(context.Background(), 0, complete)
	if err != nil {
		t.Fatal(err)
	}
	return s, claim.Epoch, pool
}

func changed(docs ...document.Document) []state.Update {
	out := make([]state.Update, len(docs))
	for i, d := range docs {
		out[i] = state.Update{Doc: d, Emit: state.EmitChanged}
	}
	return out
}

// noStore is PostgreSQL with nothing in it.
type noStore struct{ calls [][]string }

func (n *noStore) Load(_ context.Context, urls []string) (map[string]document.Document, error) {
	n.calls = append(n.calls, urls)
	return nil, nil
}

func TestApplyFollowsTheReferenceCases(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		for _, tc := range documenttest.MergeCases() {
			t.Run(tc.Name, func(t *testing.T) {
				// One update per batch: the emission after each update; each
				// by the same leader (its cache knows the states), then each
				// by a new leader (it reads them from Redis).
				for _, newLeaders := range []bool{false, true} {
					s, epoch, pool := fresh(t, c, false)
					for i, u := range tc.Updates {
						if newLeaders {
							s = state.New(c, state.Options{Pool: pool, Partition: 3})
							claim, err := s.Claim(ctx, 0, false)
							if err != nil {
								t.Fatal(err)
							}
							epoch = claim.Epoch
						}
						res, err := s.Apply(ctx, epoch, changed(u), int64(i+1), &noStore{})
						if err != nil {
							t.Fatal(err)
						}
						want := tc.Emits[i]
						if (want == nil) != (len(res.Emitted) == 0) || (want != nil && res.Emitted[0] != *want) {
							t.Fatalf("new leaders %v, update %d: emitted %+v, want %+v", newLeaders, i, res.Emitted, want)
						}
					}
					checkFinal(t, s, tc.Final)
				}

				// The whole case in one batch: the same emissions in order.
				s, epoch, _ := fresh(t, c, true)
				res, err := s.Apply(ctx, epoch, changed(tc.Updates...), 1, nil)
				if err != nil {
					t.Fatal(err)
				}
				var want []document.Document
				for _, e := range tc.Emits {
					if e != nil {
						want = append(want, *e)
					}
				}
				if !slices.Equal(res.Emitted, want) || res.Unchanged != len(tc.Updates)-len(want) {
					t.Fatalf("one batch emitted %+v (unchanged %d), want %+v", res.Emitted, res.Unchanged, want)
				}
				checkFinal(t, s, tc.Final)
			})
		}
	})
}

func checkFinal(t *testing.T, s *state.State, final []document.Document) {
	t.Helper()
	var urls []string
	for _, d := range final {
		urls = append(urls, d.URL)
	}
	got, err := s.Get(context.Background(), urls...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range final {
		if got[want.URL] != want {
			t.Errorf("final state of %s: got %+v, want %+v", want.URL, got[want.URL], want)
		}
	}
}

func TestAnyBatchingAndOrderGivesTheGoFold(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	rapid.Check(t, func(rt *rapid.T) {
		num := rapid.OneOf(rapid.SampledFrom([]uint64{0, 1 << 53, 1<<53 + 1, 1 << 63, ^uint64(0)}), rapid.Uint64Range(0, 9))
		var updates []document.Document
		for range rapid.IntRange(1, 30).Draw(rt, "n") {
			updates = append(updates, document.Document{
				URL:     rapid.SampledFrom([]string{"a", "b", "c", "d"}).Draw(rt, "url"),
				PubDate: num.Draw(rt, "pub"), FetchTime: num.Draw(rt, "fetch"),
				Text: rapid.SampledFrom([]string{"", "x", "y", "ü"}).Draw(rt, "text"),
			})
		}
		want := map[string]document.Document{}
		for _, u := range updates {
			cur, found := want[u.URL]
			want[u.URL], _ = document.Apply(cur, found, u)
		}
		s, epoch, pool := fresh(t, c, true)
		order := rapid.Permutation(append(updates, updates[:rapid.IntRange(0, len(updates)).Draw(rt, "dups")]...)).Draw(rt, "order")
		for next := 0; len(order) > 0; {
			size := rapid.IntRange(1, len(order)).Draw(rt, "batch")
			if rapid.Bool().Draw(rt, "new leader") { // its cache is empty: it reads Redis
				s = state.New(c, state.Options{Pool: pool, Partition: 3})
				claim, err := s.Claim(ctx, 0, false)
				if err != nil {
					rt.Fatal(err)
				}
				epoch = claim.Epoch
			}
			next += size
			if _, err := s.Apply(ctx, epoch, changed(order[:size]...), int64(next), nil); err != nil {
				rt.Fatal(err)
			}
			order = order[size:]
		}
		got, err := s.Get(ctx, "a", "b", "c", "d")
		if err != nil {
			rt.Fatal(err)
		}
		if len(got) != len(want) {
			rt.Fatalf("got %d urls, want %d", len(got), len(want))
		}
		for url, w := range want {
			if got[url] != w {
				rt.Fatalf("%s: got %+v, want %+v", url, got[url], w)
			}
		}
	})
}

// pgCopy is a PostgreSQL copy holding some states.
type pgCopy struct {
	docs  map[string]document.Document
	calls [][]string
	// before, if set, runs once, at the first lookup.
	before func()
}

func (p *pgCopy) Load(_ context.Context, urls []string) (map[string]document.Document, error) {
	if p.before != nil {
		p.before()
		p.before = nil
	}
	p.calls = append(p.calls, slices.Clone(urls))
	out := map[string]document.Document{}
	for _, u := range urls {
		if d, ok := p.docs[u]; ok {
			out[u] = d
		}
	}
	return out, nil
}

func TestMissingStatesAreReadThroughOncePerBatch(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		stored := document.Document{URL: "old", PubDate: 1, FetchTime: 100, Text: "stored", FirstFetchTime: 50}
		pg := &pgCopy{docs: map[string]document.Document{"old": stored}}
		s, epoch, _ := fresh(t, c, false)

		res, err := s.Apply(ctx, epoch, changed(
			document.Document{URL: "old", PubDate: 9, FetchTime: 70, Text: "between"}, // between first and last: no change
			document.Document{URL: "new", PubDate: 2, FetchTime: 5, Text: "n"},
			document.Document{URL: "old", PubDate: 0, FetchTime: 10, Text: "oldest"},
		), 3, pg)
		if err != nil {
			t.Fatal(err)
		}
		if len(pg.calls) != 1 || !slices.Equal(pg.calls[0], []string{"old", "new"}) {
			t.Fatalf("loads: %v, want one of [old new]", pg.calls)
		}
		want := []document.Document{
			{URL: "new", PubDate: 2, FetchTime: 5, Text: "n", FirstFetchTime: 5},
			{URL: "old", PubDate: 0, FetchTime: 100, Text: "stored", FirstFetchTime: 10},
		}
		if !slices.Equal(res.Emitted, want) || res.ReadThrough != 2 || res.Unchanged != 1 {
			t.Fatalf("got %+v", res)
		}
		// Both urls are now cached: no second load.
		if _, err := s.Apply(ctx, epoch, changed(document.Document{URL: "old", FetchTime: 100, Text: "stored"}), 4, pg); err != nil {
			t.Fatal(err)
		}
		if len(pg.calls) != 1 {
			t.Fatalf("loaded again: %v", pg.calls)
		}
	})
}

func TestAReadThroughStateLeftUnchangedIsCachedClean(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		stored := document.Document{URL: "u", PubDate: 1, FetchTime: 100, Text: "stored", FirstFetchTime: 50}
		s, epoch, _ := fresh(t, c, false)
		res, err := s.Apply(ctx, epoch, changed(document.Document{URL: "u", PubDate: 1, FetchTime: 100, Text: "stored"}), 1,
			&pgCopy{docs: map[string]document.Document{"u": stored}})
		if err != nil || len(res.Emitted) != 0 {
			t.Fatalf("got %+v, %v; want nothing emitted", res, err)
		}
		if got, _ := s.Get(ctx, "u"); got["u"] != stored {
			t.Fatalf("cached %+v, want %+v", got["u"], stored)
		}
		if n, _ := s.DirtyCount(ctx); n != 0 {
			t.Fatalf("%d dirty, want 0", n)
		}
	})
}

func TestACompletePartitionNeverReadsThrough(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		s, epoch, _ := fresh(t, c, true)
		pg := &noStore{}
		if _, err := s.Apply(context.Background(), epoch, changed(document.Document{URL: "u", FetchTime: 1}), 1, pg); err != nil {
			t.Fatal(err)
		}
		if len(pg.calls) != 0 {
			t.Fatalf("looked up %v in PostgreSQL", pg.calls)
		}
	})
}

func TestAUrlThatExpiresDuringAReadThroughIsLookedUpToo(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		first, epoch, pool := fresh(t, c, false)
		if _, err := first.Apply(ctx, epoch, changed(document.Document{URL: "cached", FetchTime: 5}), 1, &noStore{}); err != nil {
			t.Fatal(err)
		}
		// A new leader, whose cache is empty, reads "cached" from Redis.
		s := state.New(c, state.Options{Pool: pool, Partition: 3})
		claim, err := s.Claim(ctx, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		epoch = claim.Epoch
		stored := document.Document{URL: "cached", FetchTime: 9, Text: "synced", FirstFetchTime: 1}
		// The first lookup (of "new") coincides with the text of "cached"
		// expiring, after its numbers were read.
		pg := &pgCopy{docs: map[string]document.Document{"cached": stored}, before: func() {
			if err := c.Do(ctx, c.B().Del().Key(fmt.Sprintf("dx:{%s/3}:s:cached", pool)).Build()).Error(); err != nil {
				t.Fatal(err)
			}
		}}
		res, err := s.Apply(ctx, epoch, changed(document.Document{URL: "new", FetchTime: 1}, document.Document{URL: "cached", FetchTime: 3}), 2, pg)
		if err != nil {
			t.Fatal(err)
		}
		if len(pg.calls) != 2 || !slices.Equal(pg.calls[1], []string{"cached"}) || res.ReadThrough != 2 {
			t.Fatalf("lookups %v (%d), want [new] then [cached]", pg.calls, res.ReadThrough)
		}
		if want := []document.Document{{URL: "new", FetchTime: 1, FirstFetchTime: 1}}; !slices.Equal(res.Emitted, want) {
			t.Fatalf("emitted %+v, want only %+v", res.Emitted, want)
		}
		want := document.Document{URL: "cached", FetchTime: 9, Text: "synced", FirstFetchTime: 1}
		if got, _ := s.Get(ctx, "cached"); got["cached"] != want {
			t.Fatalf("cached is %+v, want PostgreSQL's %+v (an expired url is not a new one)", got["cached"], want)
		}
	})
}

func TestEmitModes(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		s, epoch, _ := fresh(t, c, true)
		v1 := document.Document{URL: "u", PubDate: 1, FetchTime: 10, Text: "v1"}
		v2 := document.Document{URL: "u", PubDate: 2, FetchTime: 20, Text: "v2"}
		res, err := s.Apply(ctx, epoch, []state.Update{{Doc: v2, Emit: state.EmitNever}, {Doc: v1, Emit: state.EmitAlways}, {Doc: v2, Emit: state.EmitAlways}}, 3, nil)
		if err != nil {
			t.Fatal(err)
		}
		cur := document.Document{URL: "u", PubDate: 1, FetchTime: 20, Text: "v2", FirstFetchTime: 10}
		if !slices.Equal(res.Emitted, []document.Document{cur, cur}) {
			t.Fatalf("emitted %+v, want the current state twice", res.Emitted)
		}
	})
}

func TestALaterClaimFencesTheEarlierWriter(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		s, old, _ := fresh(t, c, true)
		claim, err := s.Claim(ctx, 0, false)
		if err != nil || claim.Epoch != old+1 {
			t.Fatalf("claim: %+v, %v", claim, err)
		}
		_, err = s.Apply(ctx, old, changed(document.Document{URL: "u", FetchTime: 1}), 1, nil)
		if !errors.Is(err, fencing.ErrFenced) {
			t.Fatalf("got %v, want ErrFenced", err)
		}
		if got, _ := s.Get(ctx, "u"); len(got) != 0 {
			t.Fatalf("fenced writer changed state: %+v", got)
		}
		if off, found, _ := s.Applied(ctx); found {
			t.Fatalf("fenced writer moved the offset to %d", off)
		}
	})
}

func TestAWipedPartitionIsReportedLostAndReclaimedAboveTheFloor(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		s, epoch, pool := fresh(t, c, true)
		if _, err := s.Apply(ctx, epoch, changed(document.Document{URL: "u", FetchTime: 1}), 7, nil); err != nil {
			t.Fatal(err)
		}
		testenv.WipePool(t, c, pool)
		for name, call := range map[string]func() error{
			"begin sync": func() error { _, _, _, err := s.BeginSync(ctx, epoch); return err },
			"sync page":  func() error { _, _, err := s.SyncPages(epoch).Next(ctx, 10, 0); return err },
			"mark clean": func() error { return s.MarkClean(ctx, epoch, []document.Document{{URL: "u"}}) },
		} {
			if err := call(); !errors.Is(err, fencing.ErrLost) {
				t.Fatalf("%s: got %v, want ErrLost", name, err)
			}
		}
		_, err := s.Apply(ctx, epoch, changed(document.Document{URL: "u", FetchTime: 2}), 8, nil)
		if !errors.Is(err, fencing.ErrLost) {
			t.Fatalf("got %v, want ErrLost", err)
		}
		claim, err := s.Claim(ctx, 41, true)
		if err != nil || claim.Epoch != 42 || claim.HasApplied {
			t.Fatalf("claim after wipe: %+v, %v; want epoch 42 and no applied offset", claim, err)
		}
	})
}

func TestTheAppliedOffsetNeverMovesBackwards(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		s, epoch, _ := fresh(t, c, true)
		for _, next := range []int64{10, 4} {
			if _, err := s.Apply(ctx, epoch, nil, next, nil); err != nil {
				t.Fatal(err)
			}
		}
		claim, err := s.Claim(ctx, 0, false)
		if err != nil || !claim.HasApplied || claim.Applied != 10 {
			t.Fatalf("claim: %+v, %v; want applied 10", claim, err)
		}
	})
}

func TestASyncPassTakesEveryChangeBeforeItAndNoneAfter(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		s, epoch, _ := fresh(t, c, true)
		if _, err := s.Apply(ctx, epoch, changed(document.Document{URL: "a", FetchTime: 1}, document.Document{URL: "b", FetchTime: 1}), 2, nil); err != nil {
			t.Fatal(err)
		}
		applied, found, pending, err := s.BeginSync(ctx, epoch)
		if err != nil || !found || applied != 2 || pending != 2 {
			t.Fatalf("begin sync: applied %d (%v), pending %d, %v", applied, found, pending, err)
		}
		// b changes during the pass.
		if _, err := s.Apply(ctx, epoch, changed(document.Document{URL: "b", FetchTime: 2}), 3, nil); err != nil {
			t.Fatal(err)
		}
		page, last, err := s.SyncPages(epoch).Next(ctx, 10, 0)
		if err != nil || !last || len(page) != 2 {
			t.Fatalf("page %+v (last %v), %v; want both urls", page, last, err)
		}
		if err := s.MarkClean(ctx, epoch, page); err != nil {
			t.Fatal(err)
		}
		// b's change after the snapshot waits for the next pass.
		applied, _, pending, err = s.BeginSync(ctx, epoch)
		if err != nil || applied != 3 || pending != 1 {
			t.Fatalf("next pass: applied %d, pending %d, %v; want 3 and b", applied, pending, err)
		}
		page, last, err = s.SyncPages(epoch).Next(ctx, 10, 0)
		if err != nil || !last || len(page) != 1 || page[0].URL != "b" || page[0].FetchTime != 2 {
			t.Fatalf("page %+v, %v; want b at fetchTime 2", page, err)
		}
	})
}

// TestADirtyStateEvictedStopsTheSync: dirty states never expire, so a
// missing one was evicted — the partition lost what Redis alone held, and
// the sync must not pass over it.
func TestADirtyStateEvictedStopsTheSync(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		s, epoch, pool := fresh(t, c, true)
		if _, err := s.Apply(ctx, epoch, changed(document.Document{URL: "u", FetchTime: 1, Text: "t"}), 1, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := s.BeginSync(ctx, epoch); err != nil {
			t.Fatal(err)
		}
		if err := c.Do(ctx, c.B().Del().Key(fmt.Sprintf("dx:{%s/3}:s:u", pool)).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		if page, _, err := s.SyncPages(epoch).Next(ctx, 10, 0); !errors.Is(err, fencing.ErrLost) {
			t.Fatalf("got %+v, %v; want ErrLost", page, err)
		}
	})
}

// TestThePagesOfAPassHoldEachUrlOnce: the sync reads the next page while
// PostgreSQL stores the last, whose urls are still set aside.
func TestThePagesOfAPassHoldEachUrlOnce(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		s, epoch, _ := fresh(t, c, true)
		var docs []document.Document
		for i := range 5 {
			docs = append(docs, document.Document{URL: fmt.Sprint(i), FetchTime: 1, Text: "x"})
		}
		if _, err := s.Apply(ctx, epoch, changed(docs...), 5, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := s.BeginSync(ctx, epoch); err != nil {
			t.Fatal(err)
		}
		pages := s.SyncPages(epoch)
		first, last, err := pages.Next(ctx, 3, 0)
		if err != nil || last || len(first) != 3 {
			t.Fatalf("page %+v (last %v), %v; want 3 of 5", first, last, err)
		}
		second, last, err := pages.Next(ctx, 3, 0)
		if err != nil || !last || len(second) != 2 {
			t.Fatalf("page %+v (last %v), %v; want the other 2, and the last", second, last, err)
		}
		seen := map[string]bool{}
		for _, d := range append(first, second...) {
			if seen[d.URL] {
				t.Fatalf("%s is in both pages", d.URL)
			}
			seen[d.URL] = true
		}
	})
}

func TestAFailedPassLeavesItsUrlsForTheNext(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		s, epoch, _ := fresh(t, c, true)
		var docs []document.Document
		for i := range 5 {
			docs = append(docs, document.Document{URL: fmt.Sprint(i), FetchTime: 1, Text: "xx"})
		}
		if _, err := s.Apply(ctx, epoch, changed(docs...), 5, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := s.BeginSync(ctx, epoch); err != nil {
			t.Fatal(err)
		}
		page, last, err := s.SyncPages(epoch).Next(ctx, 2, 0)
		if err != nil || last || len(page) != 2 {
			t.Fatalf("page %+v (last %v), %v; want 2 of 5", page, last, err)
		}
		// A byte bound ends a page with the state that reaches it: the
		// first text (2 bytes) reaches 1 byte, two of them 3.
		if bounded, last, err := s.SyncPages(epoch).Next(ctx, 3, 1); err != nil || last || len(bounded) != 1 {
			t.Fatalf("page %+v (last %v), %v; want 1 of 3 under a bound of 1 byte", bounded, last, err)
		}
		if bounded, last, err := s.SyncPages(epoch).Next(ctx, 3, 3); err != nil || last || len(bounded) != 2 {
			t.Fatalf("page %+v (last %v), %v; want 2 of 3 under a bound of 3 bytes", bounded, last, err)
		}
		if err := s.MarkClean(ctx, epoch, page); err != nil {
			t.Fatal(err)
		}
		// The pass dies here; a new url changes; the next pass has all four.
		if _, err := s.Apply(ctx, epoch, changed(document.Document{URL: "new", FetchTime: 1}), 6, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, pending, err := s.BeginSync(ctx, epoch); err != nil || pending != 4 {
			t.Fatalf("pending %d, %v; want the 3 left and the new one", pending, err)
		}
		if n, _ := s.DirtyCount(ctx); n != 4 {
			t.Fatalf("dirty count %d, want 4", n)
		}
	})
}

func TestAFencedSyncerCannotMarkClean(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		s, old, _ := fresh(t, c, true)
		if _, err := s.Apply(ctx, old, changed(document.Document{URL: "a", FetchTime: 1}), 1, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := s.BeginSync(ctx, old); err != nil {
			t.Fatal(err)
		}
		page, _, err := s.SyncPages(old).Next(ctx, 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Claim(ctx, 0, false); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkClean(ctx, old, page); !errors.Is(err, fencing.ErrFenced) {
			t.Fatalf("got %v, want ErrFenced", err)
		}
		if n, _ := s.DirtyCount(ctx); n != 1 {
			t.Fatalf("dirty count %d, want 1", n)
		}
	})
}

func TestCleanStatesExpireOnlyWithACleanTTL(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	pool := fmt.Sprintf("test-%x", rand.Uint64())
	s := state.New(c, state.Options{Pool: pool, Partition: 0, CleanTTL: time.Hour})
	claim, err := s.Claim(ctx, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, claim.Epoch, changed(document.Document{URL: "a", FetchTime: 1}), 1, nil); err != nil {
		t.Fatal(err)
	}
	ttl := func() int64 {
		n, err := c.Do(ctx, c.B().Ttl().Key(fmt.Sprintf("dx:{%s/0}:s:a", pool)).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if ttl() != -1 {
		t.Fatal("a dirty state has a TTL")
	}
	if _, _, _, err := s.BeginSync(ctx, claim.Epoch); err != nil {
		t.Fatal(err)
	}
	page, _, err := s.SyncPages(claim.Epoch).Next(ctx, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MarkClean(ctx, claim.Epoch, page); err != nil {
		t.Fatal(err)
	}
	if got := ttl(); got <= 0 || got > 3600 {
		t.Fatalf("clean state TTL %d, want (0, 3600]", got)
	}
	// Once states can expire, a missing key may be an evicted url: read through.
	pg := &noStore{}
	if _, err := s.Apply(ctx, claim.Epoch, changed(document.Document{URL: "z", FetchTime: 1}), 2, pg); err != nil {
		t.Fatal(err)
	}
	if len(pg.calls) != 1 {
		t.Fatalf("loads %v, want one", pg.calls)
	}
	// A change makes the state dirty again, and dirty states never expire.
	if _, err := s.Apply(ctx, claim.Epoch, changed(document.Document{URL: "a", FetchTime: 5}), 3, pg); err != nil {
		t.Fatal(err)
	}
	if ttl() != -1 {
		t.Fatal("a state dirty again kept its TTL")
	}
}

// TestRedisGoingBackInTimeIsNoticed sets the partition's meta back as an
// older snapshot would: its applied offset behind what this writer left,
// or its epoch older than this writer's claim.
func TestRedisGoingBackInTimeIsNoticed(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		for _, tc := range []struct {
			name  string
			field string // of the meta hash, set back
			value string
		}{
			{"an applied offset behind the writer's", "applied", "1"},
			{"an applied offset that vanished", "applied", ""},
			{"an epoch older than the writer's", "epoch", "0"}, // the claim gave 1
		} {
			t.Run(tc.name, func(t *testing.T) {
				s, epoch, pool := fresh(t, c, true)
				doc := document.Document{URL: "u", FetchTime: 1}
				for next := range int64(3) {
					if _, err := s.Apply(ctx, epoch, changed(doc), next+1, nil); err != nil {
						t.Fatal(err)
					}
				}
				meta := "dx:{" + pool + "/3}:meta"
				cmd := c.B().Hset().Key(meta).FieldValue().FieldValue(tc.field, tc.value).Build()
				if tc.value == "" {
					cmd = c.B().Hdel().Key(meta).Field(tc.field).Build()
				}
				if err := c.Do(ctx, cmd).Error(); err != nil {
					t.Fatal(err)
				}
				_, err := s.Apply(ctx, epoch, changed(doc), 4, nil)
				if !errors.Is(err, fencing.ErrStale) || !errors.Is(err, fencing.ErrLost) {
					t.Fatalf("got %v, want ErrStale (an ErrLost)", err)
				}
			})
		}
	})
}

func TestAReplayBelowTheAppliedOffsetLeavesIt(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		s, epoch, _ := fresh(t, c, true)
		doc := document.Document{URL: "u", FetchTime: 1}
		if _, err := s.Apply(ctx, epoch, changed(doc), 5, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Apply(ctx, epoch, changed(doc), 5, nil); err != nil {
			t.Fatalf("the same batch again: %v", err)
		}
		if _, err := s.Apply(ctx, epoch, changed(doc), 3, nil); err != nil {
			t.Fatal(err)
		}
		if applied, _, _ := s.Applied(ctx); applied != 5 {
			t.Fatalf("applied offset %d after a replay of 3, want 5", applied)
		}
	})
}

// TestTheMergeAndTheSyncMayRunAtOnce: the pipeline merges and syncs on
// goroutines of their own. With a CleanTTL, marking states clean drops them
// from the leader's cache while batches read and fill it (run with -race,
// as make test does for this package).
func TestTheMergeAndTheSyncMayRunAtOnce(t *testing.T) {
	ctx := context.Background()
	pool := fmt.Sprintf("at-once-%x", rand.Uint64())
	s := state.New(testenv.Redis(t), state.Options{Pool: pool, Partition: 0, CleanTTL: time.Hour})
	claim, err := s.Claim(ctx, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	const batches = 200
	var g errgroup.Group
	g.Go(func() error {
		for i := range batches {
			var docs []document.Document
			for j := range 20 {
				docs = append(docs, document.Document{URL: fmt.Sprint((i*7 + j) % 50), FetchTime: uint64(i + 1), Text: "t"})
			}
			if _, err := s.Apply(ctx, claim.Epoch, changed(docs...), int64(i+1), &noStore{}); err != nil {
				return fmt.Errorf("batch %d: %w", i, err)
			}
		}
		return nil
	})
	g.Go(func() error {
		for range batches / 4 {
			if _, _, _, err := s.BeginSync(ctx, claim.Epoch); err != nil {
				return err
			}
			pages := s.SyncPages(claim.Epoch)
			for last := false; !last; {
				var page []document.Document
				if page, last, err = pages.Next(ctx, 10, 0); err != nil {
					return err
				}
				if err := s.MarkClean(ctx, claim.Epoch, page); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// The last batch's states are current, as Redis has them.
	got, err := s.Get(ctx, fmt.Sprint(((batches-1)*7)%50))
	if err != nil || len(got) != 1 {
		t.Fatalf("state %+v, %v", got, err)
	}
	for _, d := range got {
		if d.FetchTime != batches {
			t.Fatalf("state %+v, want fetchTime %d", d, batches)
		}
	}
}

// TestAStateThatExpiredBeforeItsNumbersChangeIsWrittenWhole: with a
// CleanTTL the leader may believe a clean state is in Redis after its key
// expired. An older version then changes its numbers alone; writing them
// alone (SETRANGE) would leave a value without its text.
func TestAStateThatExpiredBeforeItsNumbersChangeIsWrittenWhole(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		pool := fmt.Sprintf("expired-%x", rand.Uint64())
		s := state.New(c, state.Options{Pool: pool, Partition: 0, CleanTTL: time.Hour})
		claim, err := s.Claim(ctx, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		page := document.Document{URL: "u", PubDate: 100, FetchTime: 100, FirstFetchTime: 100, Text: strings.Repeat("a web page ", 500)}
		pg := &pgCopy{docs: map[string]document.Document{"u": page}}
		// Read through and cached clean: in Redis with a TTL, and in the leader's cache.
		if _, err := s.Apply(ctx, claim.Epoch, changed(page), 1, pg); err != nil {
			t.Fatal(err)
		}
		if err := c.Do(ctx, c.B().Del().Key(fmt.Sprintf("dx:{%s/0}:s:u", pool)).Build()).Error(); err != nil {
			t.Fatal(err) // it expires
		}
		older := document.Document{URL: "u", PubDate: 50, FetchTime: 50, Text: "an older crawl"}
		if _, err := s.Apply(ctx, claim.Epoch, changed(older), 2, pg); err != nil {
			t.Fatal(err)
		}
		want := page
		want.PubDate, want.FirstFetchTime = 50, 50
		got, err := s.Get(ctx, "u")
		if err != nil || got["u"] != want {
			t.Fatalf("Redis holds %+v (%v), want the page with the older crawl's pubDate and firstFetchTime", got["u"], err)
		}
	})
}

// TestManyUrlsDirtyBesideAFailedPassMoveAsideTogether: a pass that failed
// leaves its urls set aside, and the next one joins the urls dirty since
// to them, however many (miniredis returns a whole hash from one HSCAN).
func TestManyUrlsDirtyBesideAFailedPassMoveAsideTogether(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		s, epoch, _ := fresh(t, c, true)
		if _, err := s.Apply(ctx, epoch, changed(document.Document{URL: "first", FetchTime: 1}), 1, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := s.BeginSync(ctx, epoch); err != nil {
			t.Fatal(err) // and the pass fails: "first" stays set aside
		}
		var docs []document.Document
		for i := range 6000 {
			docs = append(docs, document.Document{URL: fmt.Sprint(i), FetchTime: 1})
		}
		if _, err := s.Apply(ctx, epoch, changed(docs...), 2, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, pending, err := s.BeginSync(ctx, epoch); err != nil || pending != 6001 {
			t.Fatalf("pending %d (%v), want all 6001", pending, err)
		}
	})
}

// TestWebPagesRoundTripThroughRedis: documents shaped like the web (texts
// log-normal up to the broker's limit, every script, urls up to 8 KB,
// duplicates and disorder) merged in batches, with a leader whose cache
// holds few of them, come back as the oracle says, and the sync's pages
// hold each url once and end at the text that crosses their byte bound.
func TestWebPagesRoundTripThroughRedis(t *testing.T) {
	servers(t, func(t *testing.T, c rueidis.Client) {
		ctx := context.Background()
		pool := fmt.Sprintf("web-%x", rand.Uint64())
		// A small cache: most states are read back from Redis (GETRANGE
		// of their numbers, texts when the merge needs them).
		s := state.New(c, state.Options{Pool: pool, Partition: 0, CacheBytes: 256 << 10})
		claim, err := s.Claim(ctx, 0, true)
		if err != nil {
			t.Fatal(err)
		}
		g, err := docgen.New(docgen.Options{Seed: 9, TotalBytes: 12 << 20})
		if err != nil {
			t.Fatal(err)
		}
		var batch []state.Update
		next := int64(0)
		flush := func() {
			next++
			if _, err := s.Apply(ctx, claim.Epoch, batch, next, nil); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
		for d := range g.Updates() {
			if batch = append(batch, state.Update{Doc: d, Emit: state.EmitChanged}); len(batch) == 100 {
				flush()
			}
		}
		flush()
		want := docgen.FinalStates(g.Updates())
		urls := make([]string, 0, len(want))
		for url := range want {
			urls = append(urls, url)
		}
		got, err := s.Get(ctx, urls...)
		if err != nil || len(got) != len(want) {
			t.Fatalf("got %d states (%v), want %d", len(got), err, len(want))
		}
		for url, d := range want {
			if got[url] != d {
				t.Fatalf("state of a %d-byte url: got %d bytes of text at fetchTime %d, want %d at %d",
					len(url), len(got[url].Text), got[url].FetchTime, len(d.Text), d.FetchTime)
			}
		}
		if _, _, _, err := s.BeginSync(ctx, claim.Epoch); err != nil {
			t.Fatal(err)
		}
		const bound = 256 << 10
		pages := s.SyncPages(claim.Epoch)
		seen := map[string]bool{}
		for last := false; !last; {
			var page []document.Document
			if page, last, err = pages.Next(ctx, 1000, bound); err != nil {
				t.Fatal(err)
			}
			bytes := 0
			for i, d := range page {
				if seen[d.URL] || d != want[d.URL] {
					t.Fatalf("page state of %q: seen before %v, or not the oracle's", d.URL[:min(len(d.URL), 40)], seen[d.URL])
				}
				seen[d.URL] = true
				if bytes >= bound {
					t.Fatalf("a page goes on after its text bound: %d bytes before state %d", bytes, i)
				}
				bytes += len(d.Text)
			}
			if err := s.MarkClean(ctx, claim.Epoch, page); err != nil {
				t.Fatal(err)
			}
		}
		if len(seen) != len(want) {
			t.Fatalf("the pages held %d urls, want %d", len(seen), len(want))
		}
	})
}
