package state

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/docexec/docexec/executor/fencing"
)

// Commit writes a prepared batch in one fenced step: its states, their urls
// in the dirty hash, the applied offset and its Output. Retried after an
// error that may pass, it writes the same again.
func (s *State) Commit(ctx context.Context, b *Batch) error {
	s.mu.Lock()
	lastApplied := s.applied
	s.mu.Unlock()
	watch := []string{s.metaKey}
	if b.Published >= 0 {
		watch = append(watch, s.outKey)
	}
	err := s.fenced(ctx, "write a batch", b.epoch, transaction{
		watch: watch,
		reads: func(rb rueidis.Builder) rueidis.Commands {
			reads := rueidis.Commands{rb.Hmget().Key(s.metaKey).Field("applied", "complete").Build()}
			if b.Published >= 0 {
				reads = append(reads, rb.Hkeys().Key(s.outKey).Build())
			}
			return reads
		},
		writes: func(rb rueidis.Builder, read []rueidis.RedisResult) (rueidis.Commands, error) {
			return s.batchWrites(rb, b, lastApplied, read)
		},
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(b.next)
	if b.count != "" && b.count != s.completeFor {
		s.completeFor = "" // the write voided it for good
	}
	for _, k := range b.known {
		s.cache.put(k.doc, k.hasText, k.textBytes)
	}
	return nil
}

// batchWrites are the commands that write b, given the applied offset as
// the caller last left it, and what was read: the meta hash's applied and
// complete fields and, when b.Published is set, the recorded outputs'
// offsets.
func (s *State) batchWrites(rb rueidis.Builder, b *Batch, lastApplied string, read []rueidis.RedisResult) (rueidis.Commands, error) {
	fields, err := read[0].ToArray()
	if err != nil || len(fields) != 2 {
		return nil, fmt.Errorf("read the applied offset: %v fields, %w", len(fields), err)
	}
	applied, _ := fields[0].ToString() // "" when there is none
	next := strconv.FormatInt(b.next, 10)
	// The caller is the partition's only writer: the applied offset is as
	// it last left it, or this batch's when a retry follows a call whose
	// reply was lost. Anything else means Redis went back in time within
	// the epoch (a restore of an older snapshot, a promoted replica that
	// lagged): its states miss updates the caller applied and published.
	if applied != lastApplied && applied != next {
		mark := rueidis.Commands{rb.Hset().Key(s.metaKey).FieldValue().FieldValue("stale", "1").Build()} // for the claim that recovers
		return mark, fmt.Errorf("%w: the applied offset is %q, the caller last saw %q", fencing.ErrStale, applied, lastApplied)
	}
	var cmds rueidis.Commands
	// A complete copy (claim.lua) stays complete only while the topic keeps
	// its partition count: once it changed, urls with history elsewhere
	// move in, and it never is again.
	if completeFor, err := fields[1].ToString(); err == nil && completeFor != b.count {
		cmds = append(cmds, rb.Hdel().Key(s.metaKey).Field("complete").Build())
	}
	ttl := int64(s.opts.CleanTTL.Seconds())
	// Written states are dirty: SET drops any TTL, and a state whose
	// numbers alone change loses the TTL it had as a clean state.
	values := rb.Mset().KeyValue()
	pairs := 0
	dirty := rb.Hset().Key(s.dirtyKey).FieldValue()
	for _, w := range b.writes {
		if w.writeText {
			values = values.KeyValue(s.stateKey(w.doc.URL), encodeState(w.doc))
			pairs++
		} else {
			cmds = append(cmds, rb.Setrange().Key(s.stateKey(w.doc.URL)).Offset(0).Value(encodeNumbers(w.doc, w.textBytes)).Build())
			if ttl > 0 {
				cmds = append(cmds, rb.Persist().Key(s.stateKey(w.doc.URL)).Build())
			}
		}
		dirty = dirty.FieldValue(w.doc.URL, strconv.Itoa(w.textBytes))
	}
	// States read from PostgreSQL and left unchanged are cached clean.
	for _, d := range b.cached {
		if ttl > 0 {
			cmds = append(cmds, rb.Set().Key(s.stateKey(d.URL)).Value(encodeState(d)).ExSeconds(ttl).Build())
			continue
		}
		values = values.KeyValue(s.stateKey(d.URL), encodeState(d))
		pairs++
	}
	if pairs > 0 {
		cmds = append(cmds, values.Build())
	}
	if len(b.writes) > 0 {
		cmds = append(cmds, dirty.Build())
	}
	// The applied offset never goes back (a replay re-applies lower
	// offsets): everything below it is applied.
	if prev, err := strconv.ParseInt(applied, 10, 64); err != nil || b.next > prev {
		cmds = append(cmds, rb.Hset().Key(s.metaKey).FieldValue().FieldValue("applied", next).Build())
	}
	// The batch's output, kept until Kafka committed it (exactly-once
	// recovery publishes what is left); outputs published already go.
	if len(b.Output) > 0 {
		cmds = append(cmds, rb.Hset().Key(s.outKey).FieldValue().FieldValue(next, string(b.Output)).Build())
	}
	if b.Published >= 0 {
		offsets, err := read[1].AsStrSlice()
		if err != nil {
			return nil, fmt.Errorf("read the recorded outputs: %w", err)
		}
		var done []string
		for _, o := range offsets {
			if n, err := strconv.ParseInt(o, 10, 64); err == nil && n <= b.Published {
				done = append(done, o)
			}
		}
		if len(done) > 0 {
			cmds = append(cmds, rb.Hdel().Key(s.outKey).Field(done...).Build())
		}
	}
	return cmds, nil
}

// advance records next as applied, as Commit writes it: it never goes back.
// The caller holds mu.
func (s *State) advance(next int64) {
	if prev, err := strconv.ParseInt(s.applied, 10, 64); err != nil || next > prev {
		s.applied = strconv.FormatInt(next, 10)
	}
}
