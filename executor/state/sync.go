package state

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/fencing"
)

// BeginSync starts a sync pass: the urls dirty so far are set aside to be
// synced, and applied is the offset below which all their changes lie.
// pending counts them (with any left over from a failed pass).
func (s *State) BeginSync(ctx context.Context, epoch uint64) (applied int64, hasApplied bool, pending int64, err error) {
	res, err := beginSyncScript.Exec(ctx, s.client, []string{s.metaKey, s.dirtyKey, s.syncingKey},
		[]string{strconv.FormatUint(epoch, 10)}).ToArray()
	if err != nil {
		return 0, false, 0, s.classify("begin sync", err)
	}
	if text, err := res[0].ToString(); err == nil {
		if applied, err = strconv.ParseInt(text, 10, 64); err != nil {
			return 0, false, 0, fmt.Errorf("state: begin sync of partition %d: applied offset %q: %w", s.opts.Partition, text, err)
		}
		hasApplied = true
	}
	pending, err = res[1].AsInt64()
	if err != nil {
		return 0, false, 0, fmt.Errorf("state: begin sync of partition %d: %w", s.opts.Partition, err)
	}
	return applied, hasApplied, pending, nil
}

// SyncPages reads the states that BeginSync set aside, page by page, for
// one pass. Pages are read in turn, but the next may be read while the last
// is being saved: a page's urls stay set aside until marked clean, and the
// pages walk the hash of them (HSCAN) instead of sampling it.
type SyncPages struct {
	s      *State
	epoch  uint64
	cursor uint64
	walked bool      // the walk started and, at cursor 0 again, ended
	urls   []pending // walked, not yet returned
}

// pending is a url set aside and the size of its text.
type pending struct {
	url       string
	textBytes int
}

// SyncPages starts reading the states set aside for the pass of epoch.
func (s *State) SyncPages(epoch uint64) *SyncPages { return &SyncPages{s: s, epoch: epoch} }

// Next returns the states of up to limit urls, fewer once their texts reach
// maxBytes (0: no bound; the state that crosses it is included); last says
// that no others are left. The sizes come with the urls, so a page of large
// documents never travels.
func (p *SyncPages) Next(ctx context.Context, limit, maxBytes int) (states []document.Document, last bool, err error) {
	s := p.s
	for len(p.urls) < limit && !(p.walked && p.cursor == 0) {
		entry, err := s.client.Do(ctx, s.client.B().Hscan().Key(s.syncingKey).Cursor(p.cursor).Count(int64(limit)).Build()).AsScanEntry()
		if err != nil {
			return nil, false, fmt.Errorf("state: list urls to sync of partition %d: %w", s.opts.Partition, err)
		}
		for i := 0; i+1 < len(entry.Elements); i += 2 {
			n, err := strconv.Atoi(entry.Elements[i+1])
			if err != nil {
				return nil, false, fmt.Errorf("state: the size of %q to sync of partition %d: %w", entry.Elements[i], s.opts.Partition, err)
			}
			p.urls = append(p.urls, pending{url: entry.Elements[i], textBytes: n})
		}
		p.cursor, p.walked = entry.Cursor, true
	}
	n, bytes := 0, 0
	for n < min(limit, len(p.urls)) && (maxBytes <= 0 || bytes < maxBytes) {
		bytes += p.urls[n].textBytes
		n++
	}
	urls := make([]string, n)
	for i := range urls {
		urls[i] = p.urls[i].url
	}
	if states, err = s.read(ctx, p.epoch, urls); err != nil {
		return nil, false, err
	}
	p.urls = p.urls[n:]
	return states, p.cursor == 0 && len(p.urls) == 0, nil
}

// read returns the states of urls, read with the epoch in one step, so that
// a wiped or lost partition cannot pass for a synced one.
func (s *State) read(ctx context.Context, epoch uint64, urls []string) ([]document.Document, error) {
	if len(urls) == 0 {
		_, err := s.fencedRead(ctx, "read states to sync", epoch, nil)
		return nil, err
	}
	keys := make([]string, len(urls))
	for i, url := range urls {
		keys[i] = s.stateKey(url)
	}
	res, err := s.fencedRead(ctx, "read states to sync", epoch, rueidis.Commands{s.client.B().Mget().Key(keys...).Build()})
	if err != nil {
		return nil, err
	}
	values, err := res[0].ToArray()
	if err != nil || len(values) != len(urls) {
		return nil, fmt.Errorf("state: read states to sync of partition %d: %d values for %d urls (%v)", s.opts.Partition, len(values), len(urls), err)
	}
	states := make([]document.Document, len(urls))
	for i, url := range urls {
		raw, err := values[i].ToString()
		if rueidis.IsRedisNil(err) {
			// Dirty states never expire: only eviction removes one.
			return nil, fmt.Errorf("state: read states to sync of partition %d: %w: the state of %q is missing (evicted? docexec needs a maxmemory-policy that keeps keys without a TTL)",
				s.opts.Partition, fencing.ErrLost, url)
		}
		if err == nil {
			states[i], err = decodeState(url, raw)
		}
		if err != nil {
			return nil, fmt.Errorf("state: read the state of %q: %w", url, err)
		}
	}
	return states, nil
}

// MarkClean ends the sync of states that SyncPages returned and PostgreSQL
// now holds. With a CleanTTL they may expire, unless changed since.
func (s *State) MarkClean(ctx context.Context, epoch uint64, states []document.Document) error {
	return s.endSync(ctx, epoch, states, s.opts.CleanTTL)
}

// MarkRefused ends the sync of states that PostgreSQL refuses to store:
// they leave the syncing hash (no retry could store them) but never expire,
// since Redis holds the only copy.
func (s *State) MarkRefused(ctx context.Context, epoch uint64, states []document.Document) error {
	return s.endSync(ctx, epoch, states, 0)
}

func (s *State) endSync(ctx context.Context, epoch uint64, states []document.Document, ttl time.Duration) error {
	if len(states) == 0 {
		return nil
	}
	urls := make([]string, len(states))
	for i, d := range states {
		urls[i] = d.URL
	}
	seconds := int64(ttl.Seconds())
	watch := []string{s.metaKey}
	if seconds > 0 {
		watch = append(watch, s.dirtyKey) // read to tell which may expire
	}
	err := s.fenced(ctx, fmt.Sprintf("mark %d states clean", len(states)), epoch, transaction{
		watch: watch,
		reads: func(rb rueidis.Builder) rueidis.Commands {
			if seconds == 0 {
				return nil
			}
			return rueidis.Commands{rb.Hmget().Key(s.dirtyKey).Field(urls...).Build()}
		},
		writes: func(rb rueidis.Builder, read []rueidis.RedisResult) (rueidis.Commands, error) {
			writes := rueidis.Commands{rb.Hdel().Key(s.syncingKey).Field(urls...).Build()}
			if seconds == 0 {
				return writes, nil
			}
			// They may expire now, unless changed again since (then they
			// are dirty, and dirty states never expire). An expired key is
			// no longer proof that a url is new.
			dirty, err := read[0].ToArray()
			if err != nil || len(dirty) != len(urls) {
				return nil, fmt.Errorf("read which are dirty: %d of %d, %w", len(dirty), len(urls), err)
			}
			writes = append(writes, rb.Hdel().Key(s.metaKey).Field("complete").Build())
			for i, url := range urls {
				if dirty[i].IsNil() {
					writes = append(writes, rb.Expire().Key(s.stateKey(url)).Seconds(seconds).Build())
				}
			}
			return writes, nil
		},
	})
	if err != nil {
		return err
	}
	if ttl > 0 {
		// A state the cache keeps must be in Redis, and a url missing from
		// Redis may be an expired one.
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, d := range states {
			s.cache.forget(d.URL)
		}
		s.completeFor = ""
	}
	return nil
}

// DirtyCount returns how many urls wait for the sync.
func (s *State) DirtyCount(ctx context.Context) (int64, error) {
	var n int64
	for _, key := range []string{s.dirtyKey, s.syncingKey} {
		c, err := s.client.Do(ctx, s.client.B().Hlen().Key(key).Build()).AsInt64()
		if err != nil {
			return 0, fmt.Errorf("state: count dirty urls of partition %d: %w", s.opts.Partition, err)
		}
		n += c
	}
	return n, nil
}

// Applied returns the offset after the last applied batch.
func (s *State) Applied(ctx context.Context) (offset int64, found bool, err error) {
	offset, err = s.client.Do(ctx, s.client.B().Hget().Key(s.metaKey).Field("applied").Build()).AsInt64()
	if rueidis.IsRedisNil(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("state: read applied offset of partition %d: %w", s.opts.Partition, err)
	}
	return offset, true, nil
}

// Get returns the current states that Redis holds of urls. Tests and
// tools use it; the pipeline learns states from Apply.
func (s *State) Get(ctx context.Context, urls ...string) (map[string]document.Document, error) {
	out := make(map[string]document.Document, len(urls))
	if len(urls) == 0 {
		return out, nil
	}
	keys := make([]string, len(urls))
	for i, url := range urls {
		keys[i] = s.stateKey(url)
	}
	vals, err := s.client.Do(ctx, s.client.B().Mget().Key(keys...).Build()).ToArray()
	if err != nil {
		return nil, fmt.Errorf("state: read %d states of partition %d: %w", len(urls), s.opts.Partition, err)
	}
	for i, url := range urls {
		raw, err := vals[i].ToString()
		if rueidis.IsRedisNil(err) {
			continue
		}
		if err == nil {
			out[url], err = decodeState(url, raw)
		}
		if err != nil {
			return nil, fmt.Errorf("state: read state of %q: %w", url, err)
		}
	}
	return out, nil
}

// Forget deletes the partition's states, dirty and syncing hashes and
// applied offset from Redis, keeping its epoch: for a Redis that went back
// to before what PostgreSQL holds, whose states are older than the durable
// copy and must be read through again. Every step is fenced, so a writer
// that lost the partition meanwhile deletes nothing of the new one's; one
// interrupted leaves a mark that makes the next claim forget again (see
// Claim.Forgetting).
func (s *State) Forget(ctx context.Context, epoch uint64) error {
	step := func(name string, keys ...string) error {
		keys = append([]string{s.metaKey, s.dirtyKey, s.syncingKey}, keys...)
		if err := forgetScript.Exec(ctx, s.client, keys, []string{strconv.FormatUint(epoch, 10), name}).Error(); err != nil {
			return s.classify("forget ("+name+")", err)
		}
		return nil
	}
	if err := step("begin"); err != nil {
		return err
	}
	s.mu.Lock()
	s.applied, s.completeFor = "", ""
	s.cache.reset()
	s.mu.Unlock()
	pattern := globEscape(s.tag) + "*"
	for addr, node := range s.client.Nodes() { // the keys live on one node of a cluster
		var cursor uint64
		for {
			entry, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(pattern).Count(1000).Build()).AsScanEntry()
			if err != nil {
				return fmt.Errorf("state: list the states of partition %d on %s: %w", s.opts.Partition, addr, err)
			}
			keys := slices.DeleteFunc(entry.Elements, func(k string) bool { return k == s.metaKey }) // the epoch stays
			if len(keys) > 0 {
				if err := step("keys", keys...); err != nil {
					return err
				}
			}
			if cursor = entry.Cursor; cursor == 0 {
				break
			}
		}
	}
	return step("end")
}

// globEscape escapes the characters SCAN's MATCH treats as patterns.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// CheckEviction returns ErrEvicting when a Redis node may evict keys that
// have no TTL (maxmemory-policy allkeys-*): dirty states exist nowhere
// else. Policies that evict only keys with a TTL (volatile-*) evict synced
// states alone, which PostgreSQL holds. A Redis that will not say (CONFIG
// renamed or denied, as managed services do) is taken at its word.
func (s *State) CheckEviction(ctx context.Context) error {
	for addr, node := range s.client.Nodes() {
		policy, err := node.Do(ctx, node.B().ConfigGet().Parameter("maxmemory-policy").Build()).AsStrMap()
		if err != nil {
			if _, refused := rueidis.IsRedisErr(err); refused {
				continue
			}
			return fmt.Errorf("state: read maxmemory-policy of %s: %w", addr, err)
		}
		if p := policy["maxmemory-policy"]; strings.HasPrefix(p, "allkeys-") {
			return fmt.Errorf("%w: %s has maxmemory-policy %s, which may evict dirty states; use noeviction or a volatile-* policy", ErrEvicting, addr, p)
		}
	}
	return nil
}

// Outputs returns the outputs that commits recorded (Batch.Output) and
// that no commit has dropped yet, by the offset after their batch.
func (s *State) Outputs(ctx context.Context) (map[int64][]byte, error) {
	fields, err := s.client.Do(ctx, s.client.B().Hgetall().Key(s.outKey).Build()).AsStrMap()
	if err != nil {
		return nil, fmt.Errorf("state: read the recorded outputs of partition %d: %w", s.opts.Partition, err)
	}
	out := make(map[int64][]byte, len(fields))
	for k, v := range fields {
		next, err := strconv.ParseInt(k, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("state: recorded output of partition %d at %q: %w", s.opts.Partition, k, err)
		}
		out[next] = []byte(v)
	}
	return out, nil
}
