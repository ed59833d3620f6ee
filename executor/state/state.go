// Package state keeps each partition's document states in Redis, the
// write-back cache between Kafka and PostgreSQL. One Lua script call merges a
// whole batch (round trips, not Redis, are what costs), marks changed urls
// dirty for the sync, advances the partition's applied offset and checks the
// fencing epoch, so state and offset can never disagree and an executor that
// lost its partition cannot write.
//
// Keys carry a hash tag per pool and partition, dx:{pool/7}:..., so that one
// partition's keys share a Redis Cluster slot and multi-key scripts work
// there. Redis must not evict keys (maxmemory-policy noeviction): dirty
// states exist nowhere else.
package state

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/docexec/docexec/executor/document"
)

var (
	// ErrFenced means another executor claimed the partition since this one
	// did: stop writing.
	ErrFenced = errors.New("state: fenced: another executor owns the partition")
	// ErrLost means Redis no longer holds the partition (restarted empty,
	// flushed): recover from PostgreSQL and Kafka.
	ErrLost = errors.New("state: partition state lost from Redis")
	// ErrStale means Redis went back in time (an older snapshot restored, a
	// lagging replica promoted): its states miss updates this executor
	// applied. It wraps ErrLost: the recovery is the same.
	ErrStale = fmt.Errorf("%w: Redis went back in time", ErrLost)
	// ErrEvicting means Redis may evict keys (an allkeys-* maxmemory-policy):
	// dirty states, which exist nowhere else, could vanish.
	ErrEvicting = errors.New("state: Redis may evict keys")
)

var (
	//go:embed fence.lua
	fenceSource string
	//go:embed apply.lua
	applySource string
	//go:embed claim.lua
	claimSource string
	//go:embed begin_sync.lua
	beginSyncSource string
	//go:embed sync_page.lua
	syncPageSource string
	//go:embed clean.lua
	cleanSource string
	//go:embed forget.lua
	forgetSource string
	//go:embed recover.lua
	recoverSource string

	claimScript = rueidis.NewLuaScript(claimSource)
	// Scripts that write check the caller's epoch first.
	applyScript     = rueidis.NewLuaScript(fenceSource + applySource)
	beginSyncScript = rueidis.NewLuaScript(fenceSource + beginSyncSource)
	syncPageScript  = rueidis.NewLuaScript(fenceSource + syncPageSource)
	cleanScript     = rueidis.NewLuaScript(fenceSource + cleanSource)
	forgetScript    = rueidis.NewLuaScript(fenceSource + forgetSource)
	recoverScript   = rueidis.NewLuaScript(fenceSource + recoverSource)
)

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
}

// State is one partition's state in Redis.
type State struct {
	client     rueidis.Client
	opts       Options
	metaKey    string
	dirtyKey   string
	syncingKey string
	docPrefix  string
	// applied is the applied offset as this writer last left it ("": none),
	// which Apply checks to notice Redis going back in time.
	applied string
	// completeFor is the partition count for which the claim found the
	// partition's copy complete ("": not complete).
	completeFor string
}

// New returns the state of the partition that opts names.
func New(client rueidis.Client, opts Options) *State {
	tag := fmt.Sprintf("dx:{%s/%d}:", opts.Pool, opts.Partition)
	return &State{client: client, opts: opts, metaKey: tag + "meta", dirtyKey: tag + "dirty", syncingKey: tag + "syncing", docPrefix: tag + "d:"}
}

// Claim is what Claim returns.
type Claim struct {
	// Epoch is the caller's fencing epoch for every write.
	Epoch uint64
	// Applied is the offset after the last applied batch, if Redis has one.
	Applied    int64
	HasApplied bool
	// Forgetting says that a Forget did not finish: the states left are
	// not to be trusted (forget again).
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
// while the input topic keeps its partition count).
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
		[]string{strconv.FormatUint(floor, 10), completeFor}).ToArray()
	if err != nil {
		return Claim{}, fmt.Errorf("state: claim partition %d: %w", s.opts.Partition, err)
	}
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

// Emit says when an update's state goes to the output topic.
type Emit byte

const (
	// EmitChanged emits the new state when the update changed it: normal
	// processing.
	EmitChanged Emit = 'c'
	// EmitAlways emits the url's current state even when unchanged: replay of
	// updates applied before a crash but perhaps never published.
	EmitAlways Emit = 'a'
	// EmitNever emits nothing: replay of updates published already.
	EmitNever Emit = 'n'
)

// Update is one update of a batch and when to emit its url's state.
type Update struct {
	Doc  document.Document
	Emit Emit
}

// Result is what one batch did.
type Result struct {
	// Emitted holds the states to publish, in update order; EmittedBy the
	// index of the update that emitted each.
	Emitted   []document.Document
	EmittedBy []int
	// Unchanged counts updates that changed nothing (duplicates, and
	// versions between the first and the last).
	Unchanged int
	// ReadThrough counts urls looked up in PostgreSQL.
	ReadThrough int
}

// Loader reads states that Redis no longer has (PostgreSQL's copy).
type Loader interface {
	Load(ctx context.Context, urls []string) (map[string]document.Document, error)
}

// maxReadThroughs bounds the lookups of one batch: a second one is needed
// only when a clean state expires between two script calls.
const maxReadThroughs = 3

// Apply merges a batch of updates into the partition's state and records
// next as the applied offset, atomically, provided epoch still owns the
// partition. Urls missing from Redis are read through from loader first (one
// Load per batch), unless the partition's Redis copy is known to be complete.
func (s *State) Apply(ctx context.Context, epoch uint64, updates []Update, next int64, loader Loader) (Result, error) {
	keys := make([]string, 0, len(updates)+2)
	keys = append(keys, s.metaKey, s.dirtyKey)
	for _, u := range updates {
		keys = append(keys, s.docPrefix+u.Doc.URL)
	}
	// A complete copy must know whether the topic still has the partition
	// count it was complete for; read after the batch was, so that any url
	// routed by a new count is seen with it.
	count := ""
	if s.completeFor != "" {
		var err error
		if count, err = s.partitionCount(ctx); err != nil {
			return Result{}, fmt.Errorf("state: apply batch of partition %d: %w", s.opts.Partition, err)
		}
		if count != s.completeFor {
			s.completeFor = "" // apply.lua voids it for good
		}
	}
	// Nobody else writes between the calls (the epoch), but a clean state
	// may expire: then the script asks again.
	looked := map[string]bool{}
	stored := map[string]document.Document{}
	for range maxReadThroughs {
		res, err := s.apply(ctx, keys, s.applyArgs(epoch, next, count, updates, looked, stored), updates)
		if err != nil || res.missing == nil {
			if err == nil {
				s.advance(next)
			}
			res.ReadThrough = len(looked)
			return res.Result, err
		}
		urls := make([]string, 0, len(res.missing))
		for _, i := range res.missing {
			urls = append(urls, updates[i].Doc.URL)
			looked[updates[i].Doc.URL] = true
		}
		found, err := loader.Load(ctx, urls)
		if err != nil {
			return Result{}, fmt.Errorf("state: read through %d urls: %w", len(urls), err)
		}
		for url, d := range found {
			stored[url] = d
		}
	}
	return Result{}, fmt.Errorf("state: apply: urls still missing after %d read-throughs", maxReadThroughs)
}

// partitionCount is the input topic's partition count now, as apply.lua
// and claim.lua compare it.
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

// advance records next as applied, as apply.lua does: it never goes back.
func (s *State) advance(next int64) {
	if prev, err := strconv.ParseInt(s.applied, 10, 64); err != nil || next > prev {
		s.applied = strconv.FormatInt(next, 10)
	}
}

// applyArgs encodes a batch as apply.lua reads it, with the states looked
// up in PostgreSQL so far.
func (s *State) applyArgs(epoch uint64, next int64, count string, updates []Update, looked map[string]bool, stored map[string]document.Document) []string {
	withBase := len(looked) > 0
	args := make([]string, 0, 7+9*len(updates))
	args = append(args, strconv.FormatUint(epoch, 10), strconv.FormatInt(next, 10), flag(withBase),
		strconv.Itoa(len(s.docPrefix)), strconv.FormatInt(int64(s.opts.CleanTTL.Seconds()), 10), s.applied, count)
	for _, u := range updates {
		args = append(args, string(u.Emit), padded(u.Doc.PubDate), padded(u.Doc.FetchTime), u.Doc.Text)
		if !withBase {
			continue
		}
		base, found := stored[u.Doc.URL]
		switch {
		case found:
			args = append(args, "+", padded(base.PubDate), padded(base.FetchTime), base.Text, padded(base.FirstFetchTime))
		case looked[u.Doc.URL]:
			args = append(args, "-", "", "", "", "")
		default:
			args = append(args, "", "", "", "", "")
		}
	}
	return args
}

type applyResult struct {
	Result
	missing []int64
}

func (s *State) apply(ctx context.Context, keys, args []string, updates []Update) (applyResult, error) {
	res, err := applyScript.Exec(ctx, s.client, keys, args).ToArray()
	if err != nil {
		return applyResult{}, s.classify("apply batch", err)
	}
	status, _ := res[0].ToString()
	if status == "miss" {
		missing, err := res[1].AsIntSlice()
		if err != nil {
			return applyResult{}, fmt.Errorf("state: apply batch: reading misses: %w", err)
		}
		return applyResult{missing: missing}, nil
	}
	unchanged, err := res[1].AsInt64()
	if err != nil {
		return applyResult{}, fmt.Errorf("state: apply batch: reading result: %w", err)
	}
	rows, err := res[2].ToArray()
	if err != nil {
		return applyResult{}, fmt.Errorf("state: apply batch: reading result: %w", err)
	}
	out := applyResult{Result: Result{Unchanged: int(unchanged), Emitted: make([]document.Document, 0, len(rows))}}
	for _, row := range rows {
		d, by, err := emittedState(row, updates)
		if err != nil {
			return applyResult{}, fmt.Errorf("state: apply batch: reading emitted state: %w", err)
		}
		out.Emitted = append(out.Emitted, d)
		out.EmittedBy = append(out.EmittedBy, by)
	}
	return out, nil
}

// emittedState decodes {update index, p, f, ff, text or nil}; a nil text
// means the update's own, which the script does not send back.
func emittedState(row rueidis.RedisMessage, updates []Update) (document.Document, int, error) {
	f, err := row.ToArray()
	if err != nil || len(f) != 5 {
		return document.Document{}, 0, fmt.Errorf("malformed row (%v)", err)
	}
	i, err := f[0].AsInt64()
	if err != nil || i < 0 || int(i) >= len(updates) {
		return document.Document{}, 0, fmt.Errorf("bad update index (%v)", err)
	}
	d := document.Document{URL: updates[i].Doc.URL}
	for j, dst := range []*uint64{&d.PubDate, &d.FetchTime, &d.FirstFetchTime} {
		digits, err := f[1+j].ToString()
		if err == nil {
			*dst, err = strconv.ParseUint(digits, 10, 64)
		}
		if err != nil {
			return document.Document{}, 0, fmt.Errorf("bad number: %w", err)
		}
	}
	if d.Text, err = f[4].ToString(); err != nil {
		d.Text = updates[i].Doc.Text
	}
	return d, int(i), nil
}

// numberWidth is the width of the largest uint64 in decimal digits.
const numberWidth = 20

// padded spells v in numberWidth digits, so that the scripts can compare
// numbers as strings.
func padded(v uint64) string {
	s := strconv.FormatUint(v, 10)
	return strings.Repeat("0", numberWidth-len(s)) + s
}

// decodeState reads a stored state: pubDate, fetchTime and firstFetchTime
// in numberWidth digits each, then the text.
func decodeState(url, v string) (document.Document, error) {
	if len(v) < 3*numberWidth {
		return document.Document{}, fmt.Errorf("stored state of %q is %d bytes, too short", url, len(v))
	}
	d := document.Document{URL: url, Text: v[3*numberWidth:]}
	for j, dst := range []*uint64{&d.PubDate, &d.FetchTime, &d.FirstFetchTime} {
		var err error
		if *dst, err = strconv.ParseUint(v[j*numberWidth:(j+1)*numberWidth], 10, 64); err != nil {
			return document.Document{}, fmt.Errorf("stored state of %q: %w", url, err)
		}
	}
	return d, nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// classify turns the scripts' error replies into ErrFenced, ErrLost and
// ErrStale.
func (s *State) classify(op string, err error) error {
	if rerr, ok := rueidis.IsRedisErr(err); ok {
		switch {
		case strings.HasPrefix(rerr.Error(), "DXFENCED"):
			return fmt.Errorf("%w (partition %d: %s)", ErrFenced, s.opts.Partition, rerr.Error())
		case strings.HasPrefix(rerr.Error(), "DXLOST"):
			return fmt.Errorf("%w (partition %d: %s)", ErrLost, s.opts.Partition, rerr.Error())
		case strings.HasPrefix(rerr.Error(), "DXSTALE"):
			return fmt.Errorf("%w (partition %d: %s)", ErrStale, s.opts.Partition, rerr.Error())
		}
	}
	return fmt.Errorf("state: %s of partition %d: %w", op, s.opts.Partition, err)
}
