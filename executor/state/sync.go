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

// SyncPage returns the states of up to limit urls set aside by BeginSync,
// fewer once their texts reach maxBytes (0: no bound; the state that
// crosses it is included); last says that no others are left.
func (s *State) SyncPage(ctx context.Context, epoch uint64, limit, maxBytes int) (states []document.Document, last bool, err error) {
	urls, err := s.client.Do(ctx, s.client.B().Srandmember().Key(s.syncingKey).Count(int64(limit)).Build()).AsStrSlice()
	if err != nil {
		return nil, false, fmt.Errorf("state: list urls to sync of partition %d: %w", s.opts.Partition, err)
	}
	keys := make([]string, 0, 2+2*len(urls))
	keys = append(keys, s.metaKey, s.syncingKey)
	for _, url := range urls {
		keys = append(keys, s.numbersKey(url))
	}
	for _, url := range urls {
		keys = append(keys, s.textKey(url))
	}
	res, err := syncPageScript.Exec(ctx, s.client, keys, []string{strconv.FormatUint(epoch, 10), strconv.Itoa(maxBytes)}).ToArray()
	if err != nil {
		return nil, false, s.classify("read states to sync", err)
	}
	left, err := res[0].AsInt64()
	if err != nil {
		return nil, false, fmt.Errorf("state: read states to sync of partition %d: %w", s.opts.Partition, err)
	}
	numbers, err1 := res[1].AsStrSlice()
	texts, err2 := res[2].AsStrSlice()
	if err1 != nil || err2 != nil || len(numbers) != len(texts) || len(numbers) > len(urls) || (len(numbers) == 0 && len(urls) > 0) {
		return nil, false, fmt.Errorf("state: read states to sync of partition %d: %d and %d values for %d urls (%v, %v)",
			s.opts.Partition, len(numbers), len(texts), len(urls), err1, err2)
	}
	urls = urls[:len(numbers)] // the first ones, within maxBytes
	states = make([]document.Document, len(urls))
	for i := range urls {
		states[i] = document.Document{URL: urls[i], Text: texts[i]}
		if err := decodeNumbers(urls[i], numbers[i], &states[i]); err != nil {
			return nil, false, fmt.Errorf("state: %w", err)
		}
	}
	return states, left <= int64(len(urls)), nil
}

// MarkClean ends the sync of states that SyncPage returned and PostgreSQL
// now holds. With a CleanTTL they may expire, unless changed since.
func (s *State) MarkClean(ctx context.Context, epoch uint64, states []document.Document) error {
	return s.endSync(ctx, epoch, states, s.opts.CleanTTL)
}

// MarkRefused ends the sync of states that PostgreSQL refuses to store:
// they leave the syncing set (no retry could store them) but never expire,
// since Redis holds the only copy.
func (s *State) MarkRefused(ctx context.Context, epoch uint64, states []document.Document) error {
	return s.endSync(ctx, epoch, states, 0)
}

func (s *State) endSync(ctx context.Context, epoch uint64, states []document.Document, ttl time.Duration) error {
	if len(states) == 0 {
		return nil
	}
	keys := make([]string, 0, 3+2*len(states))
	args := make([]string, 0, 2+len(states))
	keys = append(keys, s.metaKey, s.dirtyKey, s.syncingKey)
	args = append(args, strconv.FormatUint(epoch, 10), strconv.FormatInt(int64(ttl.Seconds()), 10))
	for _, d := range states {
		keys = append(keys, s.numbersKey(d.URL), s.textKey(d.URL))
		args = append(args, d.URL)
	}
	if err := cleanScript.Exec(ctx, s.client, keys, args).Error(); err != nil {
		return s.classify(fmt.Sprintf("mark %d states clean", len(states)), err)
	}
	if ttl > 0 {
		// They may expire now: a state the cache keeps must be in Redis,
		// and a url missing from Redis may be an expired one (clean.lua
		// voided completeness).
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
		c, err := s.client.Do(ctx, s.client.B().Scard().Key(key).Build()).AsInt64()
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
	keys := make([]string, 0, 2*len(urls))
	for _, url := range urls {
		keys = append(keys, s.numbersKey(url), s.textKey(url))
	}
	vals, err := s.client.Do(ctx, s.client.B().Mget().Key(keys...).Build()).ToArray()
	if err != nil {
		return nil, fmt.Errorf("state: read %d states of partition %d: %w", len(urls), s.opts.Partition, err)
	}
	for i, url := range urls {
		numbers, err := vals[2*i].ToString()
		if rueidis.IsRedisNil(err) {
			continue
		}
		text, err2 := vals[2*i+1].ToString()
		if err != nil || err2 != nil {
			return nil, fmt.Errorf("state: read state of %q: %v, %v", url, err, err2)
		}
		d := document.Document{URL: url, Text: text}
		if err := decodeNumbers(url, numbers, &d); err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		out[url] = d
	}
	return out, nil
}

// Forget deletes the partition's states, dirty and syncing sets and
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
	s.applied, s.completeFor = "", ""
	s.cache.reset()
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
