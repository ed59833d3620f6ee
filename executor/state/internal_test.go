package state

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/redis/rueidis"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/fencing"
	"github.com/docexec/docexec/internal/testenv"
)

// claimedState is a new partition on the test Redis, in a pool named after
// the test, claimed with a complete copy: its state, the client and the
// epoch.
func claimedState(t *testing.T, name string) (*State, rueidis.Client, uint64) {
	t.Helper()
	c := testenv.Redis(t)
	s := New(c, Options{Pool: fmt.Sprintf("%s-%x", name, rand.Uint64()), Partition: 0})
	claim, err := s.Claim(context.Background(), 0, true)
	if err != nil {
		t.Fatal(err)
	}
	return s, c, claim.Epoch
}

// TestARetryAfterALostReplyIsNoRollback plays a batch whose Apply did
// apply but whose reply never came: the writer still holds the offset
// before it, Redis has the batch's. The retry must pass.
func TestARetryAfterALostReplyIsNoRollback(t *testing.T) {
	ctx := context.Background()
	s, _, epoch := claimedState(t, "lost-reply")
	updates := []Update{{Doc: document.Document{URL: "u", FetchTime: 1}, Emit: EmitChanged}}
	if _, err := s.Apply(ctx, epoch, updates, 2, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, epoch, updates, 4, nil); err != nil {
		t.Fatal(err)
	}
	s.applied = "2" // the reply of the second call was lost
	if _, err := s.Apply(ctx, epoch, updates, 4, nil); err != nil {
		t.Fatalf("the retry: %v", err)
	}
}

// TestAForgetCutShortIsFinishedByTheNextClaim stops a Forget after its
// first step: the next claim must say so, and the states left must not
// survive a Forget.
func TestAForgetCutShortIsFinishedByTheNextClaim(t *testing.T) {
	ctx := context.Background()
	s, c, epoch := claimedState(t, "forget")
	updates := []Update{{Doc: document.Document{URL: "u", FetchTime: 1}, Emit: EmitChanged}}
	if _, err := s.Apply(ctx, epoch, updates, 1, nil); err != nil {
		t.Fatal(err)
	}
	keys := []string{s.metaKey, s.dirtyKey, s.syncingKey}
	if err := forgetScript.Exec(ctx, c, keys, []string{"1", "begin"}).Error(); err != nil {
		t.Fatal(err)
	}
	// The process dies here; another claims.
	next, err := s.Claim(ctx, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if !next.Forgetting || next.HasApplied {
		t.Fatalf("claim %+v, want Forgetting and no applied offset", next)
	}
	if err := s.Forget(ctx, next.Epoch); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, "u"); len(got) != 0 {
		t.Fatalf("states left after the Forget: %+v", got)
	}
	if again, err := s.Claim(ctx, 0, false); err != nil || again.Forgetting {
		t.Fatalf("claim %+v (%v) after a whole Forget", again, err)
	}
}

// TestAFencedForgetDeletesNothing: a writer that lost the partition may
// not delete the new writer's states.
func TestAFencedForgetDeletesNothing(t *testing.T) {
	ctx := context.Background()
	s := New(testenv.Redis(t), Options{Pool: fmt.Sprintf("fenced-forget-%x", rand.Uint64()), Partition: 0})
	old, err := s.Claim(ctx, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	newer, err := s.Claim(ctx, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	updates := []Update{{Doc: document.Document{URL: "u", FetchTime: 1}, Emit: EmitChanged}}
	if _, err := s.Apply(ctx, newer.Epoch, updates, 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Forget(ctx, old.Epoch); !errors.Is(err, fencing.ErrFenced) {
		t.Fatalf("got %v, want ErrFenced", err)
	}
	if got, _ := s.Get(ctx, "u"); len(got) != 1 {
		t.Fatal("a fenced Forget deleted the new writer's state")
	}
}

// TestAClaimBetweenACommitsReadsAndItsWritesFencesIt: the write of a batch
// reads the epoch, then writes; a claim in between must abort the write
// (the meta hash is watched), and the retry must find the writer fenced.
func TestAClaimBetweenACommitsReadsAndItsWritesFencesIt(t *testing.T) {
	for name, c := range map[string]func(testing.TB) rueidis.Client{
		"redis-server":  func(t testing.TB) rueidis.Client { return testenv.Redis(t) },
		"redis-cluster": func(t testing.TB) rueidis.Client { return testenv.OwnRedisCluster(t).Client(t) },
		"miniredis":     func(t testing.TB) rueidis.Client { return testenv.MiniRedis(t) },
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			client := c(t)
			opts := Options{Pool: fmt.Sprintf("claim-between-%x", rand.Uint64()), Partition: 0}
			s, rival := New(client, opts), New(client, opts)
			claim, err := s.Claim(ctx, 0, true)
			if err != nil {
				t.Fatal(err)
			}
			b, err := s.Prepare(ctx, claim.Epoch, []Update{{Doc: document.Document{URL: "u", FetchTime: 1, Text: "t"}, Emit: EmitChanged}}, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			claimed := false
			err = s.fenced(ctx, "write a batch", b.epoch, transaction{
				watch: []string{s.metaKey},
				reads: func(rb rueidis.Builder) rueidis.Commands {
					return rueidis.Commands{rb.Hmget().Key(s.metaKey).Field("applied", "complete").Build()}
				},
				writes: func(rb rueidis.Builder, read []rueidis.RedisResult) (rueidis.Commands, error) {
					if !claimed {
						claimed = true
						if _, err := rival.Claim(ctx, 0, false); err != nil {
							t.Fatal(err)
						}
					}
					return s.batchWrites(rb, b, s.applied, read)
				},
			})
			if !errors.Is(err, fencing.ErrFenced) {
				t.Fatalf("got %v, want ErrFenced", err)
			}
			if got, _ := s.Get(ctx, "u"); len(got) != 0 {
				t.Fatalf("the fenced write wrote %+v", got)
			}
		})
	}
}

// TestTheNumbersRecordTheTextSizeAlsoWhenOnlyTheyChange: an older version
// changes a state's pubDate and firstFetchTime but not its text, which the
// writer may not hold (a new term's cache is empty); the size the sync
// bounds its pages by must stay the text's.
func TestTheNumbersRecordTheTextSizeAlsoWhenOnlyTheyChange(t *testing.T) {
	ctx := context.Background()
	c := testenv.Redis(t)
	s := New(c, Options{Pool: fmt.Sprintf("text-size-%x", rand.Uint64()), Partition: 0})
	claim, err := s.Claim(ctx, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	newest := document.Document{URL: "u", PubDate: 5, FetchTime: 5, FirstFetchTime: 5, Text: "four"}
	if _, err := s.Apply(ctx, claim.Epoch, []Update{{Doc: newest, Emit: EmitChanged}}, 1, nil); err != nil {
		t.Fatal(err)
	}
	if claim, err = s.Claim(ctx, 0, false); err != nil {
		t.Fatal(err)
	}
	older := document.Document{URL: "u", PubDate: 1, FetchTime: 1, FirstFetchTime: 1, Text: "a much longer older text"}
	if _, err := s.Apply(ctx, claim.Epoch, []Update{{Doc: older, Emit: EmitNever}}, 2, nil); err != nil {
		t.Fatal(err)
	}
	raw, err := c.Do(ctx, c.B().Get().Key(s.stateKey("u")).Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	d, err := decodeState("u", raw)
	if err != nil || d.Text != "four" || d.FirstFetchTime != 1 || d.FetchTime != 5 {
		t.Fatalf("state %+v (%v); want firstFetchTime 1, fetchTime 5 and the newest text", d, err)
	}
	size, err := c.Do(ctx, c.B().Hget().Key(s.dirtyKey).Field("u").Build()).AsInt64()
	if err != nil || size != int64(len("four")) {
		t.Fatalf("the dirty hash has %d bytes for its text (%v), want 4", size, err)
	}
}

// TestAMarkOutlastsTheBatchesWrittenBesideIt: the sync's marks watch the
// meta hash, which every batch changes (the applied offset); a run of
// batches landing between a mark's read and its EXEC aborts it that many
// times, and it must still go through.
func TestAMarkOutlastsTheBatchesWrittenBesideIt(t *testing.T) {
	ctx := context.Background()
	s, c, epoch := claimedState(t, "outlast")
	const batchesBeside = 8
	attempts := 0
	err := s.fenced(ctx, "mark clean", epoch, transaction{
		watch: []string{s.metaKey},
		reads: func(rueidis.Builder) rueidis.Commands { return nil },
		writes: func(rb rueidis.Builder, _ []rueidis.RedisResult) (rueidis.Commands, error) {
			if attempts++; attempts <= batchesBeside {
				if err := c.Do(ctx, c.B().Hset().Key(s.metaKey).FieldValue().FieldValue("applied", fmt.Sprint(attempts)).Build()).Error(); err != nil {
					t.Fatal(err)
				}
			}
			return rueidis.Commands{rb.Set().Key(s.tag + "marked").Value("1").Build()}, nil
		},
	})
	if err != nil || attempts != batchesBeside+1 {
		t.Fatalf("after %d attempts: %v; want it to go through after %d aborted", attempts, err, batchesBeside)
	}
}

// TestATransactionCutShortLeavesNoWatchBehind: a term that ends between a
// transaction's reads and its EXEC must not hand rueidis back a connection
// still watching the meta hash, or the next transaction on it (any
// partition's) is aborted by a change it never read.
func TestATransactionCutShortLeavesNoWatchBehind(t *testing.T) {
	bg := context.Background()
	s, c, epoch := claimedState(t, "cut-short")
	ctx, cancel := context.WithCancel(bg)
	err := s.fenced(ctx, "write", epoch, transaction{
		watch: []string{s.metaKey},
		reads: func(rueidis.Builder) rueidis.Commands { return nil },
		writes: func(rb rueidis.Builder, _ []rueidis.RedisResult) (rueidis.Commands, error) {
			cancel() // the term ends here
			return rueidis.Commands{rb.Set().Key(s.tag + "x").Value("1").Build()}, nil
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want the term's end", err)
	}
	if err := c.Do(bg, c.B().Hset().Key(s.metaKey).FieldValue().FieldValue("applied", "1").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	err = c.Dedicated(func(d rueidis.DedicatedClient) error {
		res := d.DoMulti(bg, d.B().Multi().Build(), d.B().Set().Key(s.tag+"y").Value("1").Build(), d.B().Exec().Build())
		if rueidis.IsRedisNil(res[2].Error()) {
			return errors.New("the next transaction was aborted by a WATCH left behind")
		}
		return res[2].Error()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTheCacheKeepsTheTextsOfSmallStatesOnly: a web page's text is left to
// Redis, its numbers and text size are kept; a small text is kept whole.
func TestTheCacheKeepsTheTextsOfSmallStatesOnly(t *testing.T) {
	c := newCache(DefaultCacheBytes)
	small := document.Document{URL: "small", FetchTime: 1, Text: strings.Repeat("s", smallText)}
	page := document.Document{URL: "page", FetchTime: 1, Text: strings.Repeat("p", smallText+1)}
	c.put(small, true, len(small.Text))
	c.put(page, true, len(page.Text))
	if doc, hasText, size, found := c.get("small"); !found || !hasText || doc != small || size != smallText {
		t.Fatalf("small state: %v %v %d %v, want it whole", doc.URL, hasText, size, found)
	}
	doc, hasText, size, found := c.get("page")
	if !found || hasText || doc.Text != "" || doc.FetchTime != 1 || size != smallText+1 {
		t.Fatalf("web page: text kept %v (%d bytes), size %d, found %v; want its numbers and size only", hasText, len(doc.Text), size, found)
	}
	if c.bytes > 2*entryOverhead+len("small")+len("page")+smallText {
		t.Fatalf("the cache counts %d bytes, want the small text and two entries", c.bytes)
	}
}
