package state

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/docexec/docexec/executor/document"
)

// Progress is how far the partition's state has come, read in one step.
type Progress struct {
	// Applied is the offset after the last applied batch.
	Applied    int64
	HasApplied bool
	// Seq numbers the batches that changed something; a dirty url's score is
	// the Seq of its latest change.
	Seq int64
}

// Progress reads the applied offset and change sequence together, so that
// every change up to Seq is known to come from offsets below Applied.
func (s *State) Progress(ctx context.Context) (Progress, error) {
	vals, err := s.client.Do(ctx, s.client.B().Hmget().Key(s.metaKey).Field("epoch", "applied", "seq").Build()).ToArray()
	if err != nil {
		return Progress{}, fmt.Errorf("state: read progress of partition %d: %w", s.opts.Partition, err)
	}
	if vals[0].IsNil() {
		return Progress{}, fmt.Errorf("%w (partition %d)", ErrLost, s.opts.Partition)
	}
	var p Progress
	if !vals[1].IsNil() {
		if p.Applied, err = vals[1].AsInt64(); err != nil {
			return Progress{}, fmt.Errorf("state: read applied offset of partition %d: %w", s.opts.Partition, err)
		}
		p.HasApplied = true
	}
	if !vals[2].IsNil() {
		if p.Seq, err = vals[2].AsInt64(); err != nil {
			return Progress{}, fmt.Errorf("state: read change sequence of partition %d: %w", s.opts.Partition, err)
		}
	}
	return p, nil
}

// Dirty is a changed state waiting for the sync.
type Dirty struct {
	Doc document.Document
	// seq is the change that made it dirty; MarkClean clears the url only if
	// it has not changed since.
	seq int64
}

// Dirty returns up to limit dirty states changed at or before seq, oldest
// change first; more says that others may follow.
func (s *State) Dirty(ctx context.Context, seq int64, limit int) (batch []Dirty, more bool, err error) {
	scores, err := s.client.Do(ctx, s.client.B().Zrange().Key(s.dirtyKey).Min("-inf").Max(strconv.FormatInt(seq, 10)).
		Byscore().Limit(0, int64(limit)).Withscores().Build()).AsZScores()
	if err != nil {
		return nil, false, fmt.Errorf("state: list dirty urls of partition %d: %w", s.opts.Partition, err)
	}
	if len(scores) == 0 {
		return nil, false, nil
	}
	cmds := make(rueidis.Commands, len(scores))
	for i, z := range scores {
		cmds[i] = s.client.B().Hmget().Key(s.docPrefix+z.Member).Field("p", "f", "t", "ff").Build()
	}
	out := make([]Dirty, 0, len(scores))
	for i, res := range s.client.DoMulti(ctx, cmds...) {
		vals, err := res.ToArray()
		if err != nil {
			return nil, false, fmt.Errorf("state: read dirty state of partition %d: %w", s.opts.Partition, err)
		}
		if vals[0].IsNil() {
			continue // dirty keys never expire: only a wipe races us here
		}
		d, err := parseState(scores[i].Member, vals)
		if err != nil {
			return nil, false, fmt.Errorf("state: read dirty state of %q: %w", scores[i].Member, err)
		}
		out = append(out, Dirty{Doc: d, seq: int64(scores[i].Score)})
	}
	return out, len(scores) == limit, nil
}

// MarkClean clears the dirty mark of states the sync has stored, unless they
// changed meanwhile, and returns how many it cleared.
func (s *State) MarkClean(ctx context.Context, batch []Dirty) (int64, error) {
	keys := make([]string, 0, len(batch)+2)
	args := make([]string, 0, 2*len(batch)+1)
	keys = append(keys, s.metaKey, s.dirtyKey)
	args = append(args, strconv.FormatInt(int64(s.opts.CleanTTL.Seconds()), 10))
	for _, d := range batch {
		keys = append(keys, s.docPrefix+d.Doc.URL)
		args = append(args, d.Doc.URL, strconv.FormatInt(d.seq, 10))
	}
	n, err := cleanScript.Exec(ctx, s.client, keys, args).AsInt64()
	if err != nil {
		return 0, fmt.Errorf("state: mark %d states clean in partition %d: %w", len(batch), s.opts.Partition, err)
	}
	return n, nil
}

// DirtyCount returns how many urls wait for the sync.
func (s *State) DirtyCount(ctx context.Context) (int64, error) {
	n, err := s.client.Do(ctx, s.client.B().Zcard().Key(s.dirtyKey).Build()).AsInt64()
	if err != nil {
		return 0, fmt.Errorf("state: count dirty urls of partition %d: %w", s.opts.Partition, err)
	}
	return n, nil
}

// Get returns the current states of urls that Redis holds (for tests and
// tools; the pipeline learns states from Apply).
func (s *State) Get(ctx context.Context, urls ...string) (map[string]document.Document, error) {
	cmds := make(rueidis.Commands, len(urls))
	for i, url := range urls {
		cmds[i] = s.client.B().Hmget().Key(s.docPrefix+url).Field("p", "f", "t", "ff").Build()
	}
	out := make(map[string]document.Document, len(urls))
	for i, res := range s.client.DoMulti(ctx, cmds...) {
		vals, err := res.ToArray()
		if err != nil {
			return nil, fmt.Errorf("state: get %q: %w", urls[i], err)
		}
		if vals[0].IsNil() {
			continue
		}
		if out[urls[i]], err = parseState(urls[i], vals); err != nil {
			return nil, fmt.Errorf("state: get %q: %w", urls[i], err)
		}
	}
	return out, nil
}

// parseState reads the {p, f, t, ff} fields of a state hash.
func parseState(url string, vals []rueidis.RedisMessage) (document.Document, error) {
	if len(vals) != 4 {
		return document.Document{}, fmt.Errorf("want 4 fields, got %d", len(vals))
	}
	d := document.Document{URL: url}
	var err error
	for _, f := range []struct {
		dst *uint64
		msg rueidis.RedisMessage
	}{{&d.PubDate, vals[0]}, {&d.FetchTime, vals[1]}, {&d.FirstFetchTime, vals[3]}} {
		text, e := f.msg.ToString()
		if e == nil {
			*f.dst, e = strconv.ParseUint(text, 10, 64)
		}
		if e != nil {
			return document.Document{}, fmt.Errorf("bad number: %w", e)
		}
	}
	d.Text, err = vals[2].ToString()
	return d, err
}
