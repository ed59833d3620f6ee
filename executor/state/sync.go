package state

import (
	"context"
	"fmt"
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

// SyncPage returns the states of up to limit urls set aside by BeginSync;
// last says that no others are left.
func (s *State) SyncPage(ctx context.Context, epoch uint64, limit int) (states []document.Document, last bool, err error) {
	urls, err := s.client.Do(ctx, s.client.B().Srandmember().Key(s.syncingKey).Count(int64(limit)).Build()).AsStrSlice()
	if err != nil {
		return nil, false, fmt.Errorf("state: list urls to sync of partition %d: %w", s.opts.Partition, err)
	}
	keys := make([]string, 0, len(urls)+2)
	keys = append(keys, s.metaKey, s.syncingKey)
	for _, url := range urls {
		keys = append(keys, s.docPrefix+url)
	}
	res, err := syncPageScript.Exec(ctx, s.client, keys, []string{strconv.FormatUint(epoch, 10)}).ToArray()
	if err != nil {
		return nil, false, s.classify("read states to sync", err)
	}
	left, err := res[0].AsInt64()
	if err != nil {
		return nil, false, fmt.Errorf("state: read states to sync of partition %d: %w", s.opts.Partition, err)
	}
	values, err := res[1].AsStrSlice()
	if err != nil || len(values) != len(urls) {
		return nil, false, fmt.Errorf("state: read states to sync of partition %d: %d values for %d urls (%v)", s.opts.Partition, len(values), len(urls), err)
	}
	states = make([]document.Document, len(urls))
	for i, v := range values {
		if states[i], err = decodeState(urls[i], v); err != nil {
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
	keys := make([]string, 0, len(states)+3)
	args := make([]string, 0, len(states)+2)
	keys = append(keys, s.metaKey, s.dirtyKey, s.syncingKey)
	args = append(args, strconv.FormatUint(epoch, 10), strconv.FormatInt(int64(ttl.Seconds()), 10))
	for _, d := range states {
		keys = append(keys, s.docPrefix+d.URL)
		args = append(args, d.URL)
	}
	if err := cleanScript.Exec(ctx, s.client, keys, args).Error(); err != nil {
		return s.classify(fmt.Sprintf("mark %d states clean", len(states)), err)
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

// Get returns the current states that Redis holds of urls, in one MGET (the
// keys share a slot). Tests and tools use it; the pipeline learns states
// from Apply.
func (s *State) Get(ctx context.Context, urls ...string) (map[string]document.Document, error) {
	out := make(map[string]document.Document, len(urls))
	if len(urls) == 0 {
		return out, nil
	}
	keys := make([]string, len(urls))
	for i, url := range urls {
		keys[i] = s.docPrefix + url
	}
	vals, err := s.client.Do(ctx, s.client.B().Mget().Key(keys...).Build()).ToArray()
	if err != nil {
		return nil, fmt.Errorf("state: read %d states of partition %d: %w", len(urls), s.opts.Partition, err)
	}
	for i, v := range vals {
		raw, err := v.ToString()
		if rueidis.IsRedisNil(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("state: read state of %q: %w", urls[i], err)
		}
		if out[urls[i]], err = decodeState(urls[i], raw); err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
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
	pattern := globEscape(s.docPrefix) + "*"
	for addr, node := range s.client.Nodes() { // the keys live on one node of a cluster
		var cursor uint64
		for {
			entry, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(pattern).Count(1000).Build()).AsScanEntry()
			if err != nil {
				return fmt.Errorf("state: list the states of partition %d on %s: %w", s.opts.Partition, addr, err)
			}
			if len(entry.Elements) > 0 {
				if err := step("keys", entry.Elements...); err != nil {
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
