package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/rueidis"
)

// The batch's write and the sync's reads and marks are transactions
// (WATCH, MULTI, EXEC) rather than scripts: a script copies every argument
// and every value read, each state's text included, into Lua and back out,
// which cost Redis more than the writes themselves (docs/benchmarks.md).
// They are fenced all the same: the epoch is read under WATCH (or inside
// MULTI) and checked here, and a claim between that read and EXEC changes
// the meta hash, which aborts the EXEC. All keys of a partition share one
// hash slot, so this works on Redis Cluster too.

// maxAttempts bounds the transactions that a concurrent change of the
// watched keys aborts. A claim fences the caller, and the next attempt says
// so; the partition's own batches change the meta hash too (the applied
// offset), so the sync's marks, which run beside them, lose the race now
// and then: each attempt takes a round trip or two against a batch every
// few milliseconds.
const maxAttempts = 20

var (
	// errNotHeld says the caller's epoch is not the partition's: fence.lua
	// says why (fenced, lost or gone back in time) and marks the last.
	errNotHeld = errors.New("the epoch read is not the caller's")
	// errAborted says a watched key changed before EXEC.
	errAborted = errors.New("a watched key changed")
)

// transaction is what fenced runs: reads, issued under WATCH with the
// epoch, then writes, built from what they read. writes may return commands
// to run and an error to return once they ran (a mark for a later claim).
type transaction struct {
	watch  []string
	reads  func(b rueidis.Builder) rueidis.Commands
	writes func(b rueidis.Builder, read []rueidis.RedisResult) (rueidis.Commands, error)
}

// fenced runs tx as one atomic step of the caller's term: the writes run
// only while epoch is the partition's and no watched key changed since the
// reads.
func (s *State) fenced(ctx context.Context, op string, epoch uint64, tx transaction) error {
	want := strconv.FormatUint(epoch, 10)
	for attempt := 1; ; attempt++ {
		var after error
		err := s.client.Dedicated(func(c rueidis.DedicatedClient) error {
			var err error
			after, err = s.attempt(ctx, c, want, tx)
			return err
		})
		switch {
		case err == nil:
			if after != nil {
				return fmt.Errorf("state: %s of partition %d: %w", op, s.opts.Partition, after)
			}
			return nil
		case errors.Is(err, errNotHeld):
			if err := s.whyNotHeld(ctx, op, want); err != nil {
				return err
			}
		case !errors.Is(err, errAborted):
			return fmt.Errorf("state: %s of partition %d: %w", op, s.opts.Partition, err)
		}
		if attempt == maxAttempts || ctx.Err() != nil {
			return fmt.Errorf("state: %s of partition %d: %w (%d attempts)", op, s.opts.Partition, err, attempt)
		}
	}
}

// attempt is one try of fenced on a dedicated connection.
func (s *State) attempt(ctx context.Context, c rueidis.DedicatedClient, epoch string, tx transaction) (after, err error) {
	b := c.B()
	// The connection goes back to rueidis' pool when this returns, for any
	// partition's next transaction: without a WATCH (EXEC ends it, UNWATCH
	// otherwise), or closed when that cannot be said (ctx ended, the
	// connection broke), so that it is not handed out again.
	watching := true
	defer func() {
		if watching && c.Do(ctx, b.Unwatch().Build()).Error() != nil {
			c.Close()
		}
	}()
	pre := append(rueidis.Commands{b.Watch().Key(tx.watch...).Build(), b.Hget().Key(s.metaKey).Field("epoch").Build()}, tx.reads(b)...)
	read := c.DoMulti(ctx, pre...)
	for i, r := range read {
		if err := r.Error(); err != nil && !(i == 1 && rueidis.IsRedisNil(err)) {
			return nil, fmt.Errorf("read under WATCH: %w", err)
		}
	}
	if held, _ := read[1].ToString(); held != epoch {
		return nil, errNotHeld
	}
	writes, after := tx.writes(b, read[2:])
	if len(writes) == 0 {
		return after, nil
	}
	res := c.DoMulti(ctx, append(append(rueidis.Commands{b.Multi().Build()}, writes...), b.Exec().Build())...)
	exec := res[len(res)-1]
	// An answer to EXEC, even an error or nil (aborted), ends the WATCH.
	watching = exec.NonRedisError() != nil
	if rueidis.IsRedisNil(exec.Error()) {
		return nil, errAborted
	}
	for _, r := range res {
		if err := r.Error(); err != nil {
			return nil, fmt.Errorf("transaction: %w", err)
		}
	}
	replies, err := exec.ToArray()
	if err != nil {
		return nil, fmt.Errorf("transaction: %w", err)
	}
	for _, r := range replies {
		if err := r.Error(); err != nil {
			return nil, fmt.Errorf("transaction: %w", err)
		}
	}
	return after, nil
}

// fencedRead runs reads in one step (MULTI, EXEC) with the partition's
// epoch, and fails as a write would when the epoch is not the caller's.
func (s *State) fencedRead(ctx context.Context, op string, epoch uint64, reads rueidis.Commands) ([]rueidis.RedisMessage, error) {
	b := s.client.B()
	cmds := append(append(rueidis.Commands{b.Multi().Build(), b.Hget().Key(s.metaKey).Field("epoch").Build()}, reads...), b.Exec().Build())
	res := s.client.DoMulti(ctx, cmds...)
	replies, err := res[len(res)-1].ToArray()
	if err != nil {
		return nil, fmt.Errorf("state: %s of partition %d: %w", op, s.opts.Partition, err)
	}
	want := strconv.FormatUint(epoch, 10)
	if held, _ := replies[0].ToString(); held != want {
		if err := s.whyNotHeld(ctx, op, want); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("state: %s of partition %d: the epoch changed while it read", op, s.opts.Partition)
	}
	return replies[1:], nil
}

// whyNotHeld runs fence.lua, which says why a transaction found another
// epoch than the caller's (fenced, lost or gone back in time) and marks a
// partition gone back in time for the claim that recovers. nil: the epoch
// is the caller's again (it was read in between two changes).
func (s *State) whyNotHeld(ctx context.Context, op, epoch string) error {
	if err := fenceScript.Exec(ctx, s.client, []string{s.metaKey}, []string{epoch}).Error(); err != nil {
		return s.classify(op, err)
	}
	return nil
}
