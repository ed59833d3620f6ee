// Package state keeps each partition's document states in Redis, the
// write-back cache between Kafka and PostgreSQL, for the partition's leader.
//
// The leader is the partition's only writer, fenced by an epoch that every
// script checks, so it merges in its own memory: a batch's updates are
// merged with document.Merge (the one merge rule) against a bounded cache of
// the states the leader has seen, filled by reading the states it lacks from
// Redis (their numbers first, texts only when the merge or an emission
// needs them), then from PostgreSQL. Redis receives one fenced write per
// batch: the changed states, their urls in the dirty hash, the applied
// offset and, when given, the batch's output — nothing that Redis must
// parse or compare, so that one Redis carries the traffic of many
// partitions.
//
// Keys carry a hash tag per pool and partition, dx:{pool/7}:..., so that one
// partition's keys share a Redis Cluster slot and multi-key scripts work
// there. A state is one key, s:<url>: its three numbers and the size of its
// text (32 bytes, which GETRANGE reads alone), then its text. The dirty and
// syncing hashes map urls to the sizes of their texts, so that the sync
// bounds a page's bytes without reading any. Redis must not evict keys
// without a TTL: dirty states exist nowhere else.
package state

import (
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/fencing"
)

// ErrEvicting means Redis may evict keys (an allkeys-* maxmemory-policy):
// dirty states, which exist nowhere else, could vanish.
var ErrEvicting = errors.New("state: Redis may evict keys")

// format is the layout of a partition's keys; a claim that finds another
// forgets the partition's states (they are read from PostgreSQL again).
const format = "4"

var (
	//go:embed fence.lua
	fenceSource string
	//go:embed claim.lua
	claimSource string
	//go:embed begin_sync.lua
	beginSyncSource string
	//go:embed forget.lua
	forgetSource string
	//go:embed recover.lua
	recoverSource string

	claimScript = rueidis.NewLuaScript(claimSource)
	// Scripts that write check the caller's epoch first; fenceScript alone
	// says why a transaction found another epoch (see fenced).
	fenceScript     = rueidis.NewLuaScript(fenceSource + "\nreturn redis.status_reply('OK')")
	beginSyncScript = rueidis.NewLuaScript(fenceSource + beginSyncSource)
	forgetScript    = rueidis.NewLuaScript(fenceSource + forgetSource)
	recoverScript   = rueidis.NewLuaScript(fenceSource + recoverSource)
)

// DefaultCacheBytes bounds the leader's cache of states when
// Options.CacheBytes is zero.
const DefaultCacheBytes = 16 << 20

// Options says whose state this is.
type Options struct {
	// Pool names the DocExecutorPool; with Partition it scopes every key.
	Pool string
	// Partition is the Kafka partition number.
	Partition int32
	// CleanTTL lets synced states expire from Redis after this long; 0 keeps
	// them. Dirty states never expire.
	CleanTTL time.Duration
	// PartitionCount reads the input topic's partition count now. A
	// partition whose Redis copy is complete stays so only while the count
	// does not change (urls with history elsewhere move in when it grows).
	// nil: it never changes.
	PartitionCount func(context.Context) (int32, error)
	// CacheBytes bounds the memory of the states the leader keeps (urls,
	// numbers and texts); DefaultCacheBytes when zero. The least recently
	// used go first.
	CacheBytes int
}

// State is one partition's state in Redis, as its leader sees it. Claim,
// Apply (Prepare and Commit) and the sync's calls are for one goroutine at a
// time, and so are the sync's (BeginSync, SyncPages, MarkClean); the two may
// run at once, as the pipeline merges and syncs on goroutines of their own.
// In Redis every step is atomic and fenced; in memory, mu guards what both
// touch.
type State struct {
	client     rueidis.Client
	opts       Options
	tag        string
	metaKey    string
	dirtyKey   string
	syncingKey string
	outKey     string

	mu sync.Mutex // guards applied, completeFor and cache
	// applied is the applied offset as this writer last left it ("": none),
	// which every write checks to notice Redis going back in time.
	applied string
	// completeFor is the partition count for which the claim found the
	// partition's copy complete ("": not complete).
	completeFor string
	cache       *cache
}

// New returns the state of the partition that opts names.
func New(client rueidis.Client, opts Options) *State {
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	tag := fmt.Sprintf("dx:{%s/%d}:", opts.Pool, opts.Partition)
	return &State{client: client, opts: opts, tag: tag, metaKey: tag + "meta", dirtyKey: tag + "dirty",
		syncingKey: tag + "syncing", outKey: tag + "out", cache: newCache(opts.CacheBytes)}
}

func (s *State) stateKey(url string) string { return s.tag + "s:" + url }

// Claim is what Claim returns.
type Claim struct {
	// Epoch is the caller's fencing epoch for every write.
	Epoch uint64
	// Applied is the offset after the last applied batch, if Redis has one.
	Applied    int64
	HasApplied bool
	// Forgetting says that the states left are not to be trusted (forget
	// them): a Forget did not finish, or they are of another layout.
	Forgetting bool
	// Stale says that a writer found Redis gone back in time: what it lost
	// cannot be told from what it kept, so every current state goes out
	// again, as after a loss.
	Stale bool
	// Replay is the offset up to which an earlier recovery publishes every
	// current state (Recover), 0 when none was recorded.
	Replay int64
}

// Claim makes the caller the partition's writer, fencing every earlier one.
// floor is the highest epoch recorded elsewhere (PostgreSQL), so epochs keep
// growing across a Redis wipe. complete says that the partition has no
// history anywhere, so a url missing from Redis is a new url, not an evicted
// one (it counts only if Redis holds nothing of the partition yet, and
// while the input topic keeps its partition count). The leader's cache
// starts empty with each claim.
func (s *State) Claim(ctx context.Context, floor uint64, complete bool) (Claim, error) {
	completeFor := ""
	if complete {
		n, err := s.partitionCount(ctx)
		if err != nil {
			return Claim{}, fmt.Errorf("state: claim partition %d: %w", s.opts.Partition, err)
		}
		completeFor = n
	}
	res, err := claimScript.Exec(ctx, s.client, []string{s.metaKey},
		[]string{strconv.FormatUint(floor, 10), completeFor, format}).ToArray()
	if err != nil {
		return Claim{}, fmt.Errorf("state: claim partition %d: %w", s.opts.Partition, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cache.reset()
	s.completeFor, _ = res[2].ToString()
	epochText, _ := res[0].ToString()
	epoch, err := strconv.ParseUint(epochText, 10, 64)
	if err != nil {
		return Claim{}, fmt.Errorf("state: claim partition %d: epoch %q: %w", s.opts.Partition, epochText, err)
	}
	c := Claim{Epoch: epoch}
	s.applied = ""
	if appliedText, err := res[1].ToString(); err == nil {
		if c.Applied, err = strconv.ParseInt(appliedText, 10, 64); err != nil {
			return Claim{}, fmt.Errorf("state: claim partition %d: applied offset %q: %w", s.opts.Partition, appliedText, err)
		}
		c.HasApplied, s.applied = true, appliedText
	}
	c.Forgetting = !res[3].IsNil()
	c.Stale = !res[4].IsNil()
	if replay, err := res[5].ToString(); err == nil {
		if c.Replay, err = strconv.ParseInt(replay, 10, 64); err != nil {
			return Claim{}, fmt.Errorf("state: claim partition %d: replay offset %q: %w", s.opts.Partition, replay, err)
		}
	}
	return c, nil
}

// Recover records that every current state is to be published again up to
// offset replay, so that a recovery cut short still does it in the next
// term, and clears the stale mark (Claim.Stale), now taken into account.
func (s *State) Recover(ctx context.Context, epoch uint64, replay int64) error {
	err := recoverScript.Exec(ctx, s.client, []string{s.metaKey}, []string{strconv.FormatUint(epoch, 10), strconv.FormatInt(replay, 10)}).Error()
	if err != nil {
		return s.classify("record the recovery", err)
	}
	return nil
}

// partitionCount is the input topic's partition count now, as Commit and
// claim.lua compare it.
func (s *State) partitionCount(ctx context.Context) (string, error) {
	if s.opts.PartitionCount == nil {
		return "1", nil
	}
	n, err := s.opts.PartitionCount(ctx)
	if err != nil {
		return "", fmt.Errorf("partition count of the input topic: %w", err)
	}
	return strconv.Itoa(int(n)), nil
}

// numbersSize is the size of the head of a state's value in Redis: pubDate,
// fetchTime, firstFetchTime and the size of its text, which follows.
const numbersSize = 32

// encodeNumbers writes d's pubDate, fetchTime and firstFetchTime and the
// size of its text, big-endian.
func encodeNumbers(d document.Document, textBytes int) string {
	var b [numbersSize]byte
	binary.BigEndian.PutUint64(b[0:], d.PubDate)
	binary.BigEndian.PutUint64(b[8:], d.FetchTime)
	binary.BigEndian.PutUint64(b[16:], d.FirstFetchTime)
	binary.BigEndian.PutUint64(b[24:], uint64(textBytes))
	return string(b[:])
}

// decodeNumbers reads what encodeNumbers wrote into d and returns the size
// of its text.
func decodeNumbers(url, v string, d *document.Document) (textBytes int, err error) {
	if len(v) != numbersSize {
		return 0, fmt.Errorf("stored state of %q: %d bytes of numbers, want %d", url, len(v), numbersSize)
	}
	d.PubDate = binary.BigEndian.Uint64([]byte(v[0:8]))
	d.FetchTime = binary.BigEndian.Uint64([]byte(v[8:16]))
	d.FirstFetchTime = binary.BigEndian.Uint64([]byte(v[16:24]))
	return int(binary.BigEndian.Uint64([]byte(v[24:32]))), nil
}

// encodeState is the value of d's key: its numbers, then its text.
func encodeState(d document.Document) string {
	return encodeNumbers(d, len(d.Text)) + d.Text
}

// decodeState reads what encodeState wrote.
func decodeState(url, v string) (document.Document, error) {
	d := document.Document{URL: url}
	if len(v) < numbersSize {
		return d, fmt.Errorf("stored state of %q: %d bytes, want at least %d", url, len(v), numbersSize)
	}
	textBytes, err := decodeNumbers(url, v[:numbersSize], &d)
	if err == nil && textBytes != len(v)-numbersSize {
		err = fmt.Errorf("stored state of %q: its text is %d bytes, its numbers say %d", url, len(v)-numbersSize, textBytes)
	}
	d.Text = v[numbersSize:]
	return d, err
}

// classify turns the scripts' error replies into fencing.ErrFenced,
// fencing.ErrLost and fencing.ErrStale.
func (s *State) classify(op string, err error) error {
	if rerr, ok := rueidis.IsRedisErr(err); ok {
		for prefix, sentinel := range scriptErrors {
			if strings.HasPrefix(rerr.Error(), prefix) {
				return fmt.Errorf("state: %s of partition %d: %w (%s)", op, s.opts.Partition, sentinel, rerr.Error())
			}
		}
	}
	return fmt.Errorf("state: %s of partition %d: %w", op, s.opts.Partition, err)
}

// scriptErrors maps the prefixes of the scripts' error replies to the
// fencing errors they mean.
var scriptErrors = map[string]error{
	"DXFENCED": fencing.ErrFenced,
	"DXLOST":   fencing.ErrLost,
	"DXSTALE":  fencing.ErrStale,
}
