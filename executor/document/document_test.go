package document_test

import (
	"testing"

	"pgregory.net/rapid"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/document/documenttest"
)

func TestApplyFollowsTheReferenceCases(t *testing.T) {
	for _, c := range documenttest.MergeCases() {
		t.Run(c.Name, func(t *testing.T) {
			states := map[string]document.Document{}
			for i, u := range c.Updates {
				cur, found := states[u.URL]
				next, changed := document.Apply(cur, found, u)
				states[u.URL] = next
				if want := c.Emits[i]; (want != nil) != changed || (want != nil && *want != next) {
					t.Fatalf("update %d (%+v): got changed=%v state %+v, want emission %+v", i, u, changed, next, want)
				}
			}
			if len(states) != len(c.Final) {
				t.Fatalf("got %d urls, want %d", len(states), len(c.Final))
			}
			for _, want := range c.Final {
				if got := states[want.URL]; got != want {
					t.Errorf("final state of %s: got %+v, want %+v", want.URL, got, want)
				}
			}
		})
	}
}

// genUpdates draws versions of a few urls with fetch times unique per url
// (the contract) or not (to prove the tie-break keeps Merge a join).
func genUpdates(t *rapid.T, uniqueFetch bool) []document.Document {
	urls := rapid.SampledFrom([]string{"a", "b", "c"})
	edge := rapid.SampledFrom([]uint64{0, 1, 1 << 53, 1<<53 + 1, 1 << 63, ^uint64(0) - 1, ^uint64(0)})
	num := rapid.OneOf(edge, rapid.Uint64Range(0, 20), rapid.Uint64())
	texts := rapid.SampledFrom([]string{"", "x", "y", "é", "long text"})
	n := rapid.IntRange(1, 12).Draw(t, "n")
	seen := map[[2]any]bool{}
	var out []document.Document
	for len(out) < n {
		d := document.Document{URL: urls.Draw(t, "url"), PubDate: num.Draw(t, "pub"), FetchTime: num.Draw(t, "fetch"), Text: texts.Draw(t, "text")}
		key := [2]any{d.URL, d.FetchTime}
		if uniqueFetch && seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, d)
	}
	return out
}

func finalStates(updates []document.Document) map[string]document.Document {
	states := map[string]document.Document{}
	for _, u := range updates {
		cur, found := states[u.URL]
		states[u.URL], _ = document.Apply(cur, found, u)
	}
	return states
}

// shuffleWithDuplicates returns a random permutation of updates with random
// repetitions mixed in.
func shuffleWithDuplicates(t *rapid.T, updates []document.Document) []document.Document {
	out := append([]document.Document(nil), updates...)
	extra := rapid.IntRange(0, 2*len(updates)).Draw(t, "duplicates")
	for range extra {
		out = append(out, rapid.SampledFrom(updates).Draw(t, "duplicate"))
	}
	return rapid.Permutation(out).Draw(t, "order")
}

func TestAnyOrderWithDuplicatesGivesTheSameFinalState(t *testing.T) {
	for _, unique := range []bool{true, false} {
		rapid.Check(t, func(t *rapid.T) {
			updates := genUpdates(t, unique)
			want := finalStates(updates)
			got := finalStates(shuffleWithDuplicates(t, updates))
			if len(got) != len(want) {
				t.Fatalf("got %d urls, want %d", len(got), len(want))
			}
			for url, w := range want {
				if got[url] != w {
					t.Fatalf("url %s: got %+v, want %+v", url, got[url], w)
				}
			}
		})
	}
}

func TestFinalStateTakesNewestTextAndOldestPubDate(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		updates := genUpdates(t, true)
		for url, got := range finalStates(updates) {
			var newest, oldest *document.Document
			for i := range updates {
				u := &updates[i]
				if u.URL != url {
					continue
				}
				if newest == nil || u.FetchTime > newest.FetchTime {
					newest = u
				}
				if oldest == nil || u.FetchTime < oldest.FetchTime {
					oldest = u
				}
			}
			want := document.Document{URL: url, PubDate: oldest.PubDate, FetchTime: newest.FetchTime, Text: newest.Text, FirstFetchTime: oldest.FetchTime}
			if got != want {
				t.Fatalf("url %s: got %+v, want %+v", url, got, want)
			}
		}
	})
}

func TestMergeIsAJoin(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		us := genUpdates(t, false)
		a, b, c := document.StateOf(us[0]), document.StateOf(us[len(us)/2]), document.StateOf(us[len(us)-1])
		b.URL, c.URL = a.URL, a.URL
		if document.Merge(a, b) != document.Merge(b, a) {
			t.Fatal("not commutative")
		}
		if document.Merge(document.Merge(a, b), c) != document.Merge(a, document.Merge(b, c)) {
			t.Fatal("not associative")
		}
		if document.Merge(a, a) != a {
			t.Fatal("not idempotent")
		}
	})
}
