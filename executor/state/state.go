// Package state keeps each partition's document states in Redis, the
// write-back cache between Kafka and PostgreSQL. One Lua script call merges a
// whole batch (round trips, not Redis, are what costs), marks changed urls
// dirty for the sync, advances the partition's applied offset and checks the
// fencing epoch, so state and offset can never disagree and an executor that
// lost its partition cannot write.
//
// Keys carry a hash tag per pool and partition, dx:{pool/7}:..., so that one
// partition's keys share a Redis Cluster slot and multi-key scripts work there.
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
)

var (
	//go:embed apply.lua
	applySource string
	//go:embed claim.lua
	claimSource string
	//go:embed clean.lua
	cleanSource string

	applyScript = rueidis.NewLuaScript(applySource)
	claimScript = rueidis.NewLuaScript(claimSource)
	cleanScript = rueidis.NewLuaScript(cleanSource)
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
}

// State is one partition's state in Redis.
type State struct {
	client    rueidis.Client
	opts      Options
	metaKey   string
	dirtyKey  string
	docPrefix string
}

// New returns the state of the partition that opts names.
func New(client rueidis.Client, opts Options) *State {
	tag := fmt.Sprintf("dx:{%s/%d}:", opts.Pool, opts.Partition)
	return &State{client: client, opts: opts, metaKey: tag + "meta", dirtyKey: tag + "dirty", docPrefix: tag + "d:"}
}

// Claim is what Claim returns.
type Claim struct {
	// Epoch is the caller's fencing epoch for Apply.
	Epoch uint64
	// Applied is the offset after the last applied batch, if Redis has one.
	Applied int64
	// HasApplied is false when Redis holds nothing of the partition.
	HasApplied bool
}

// Claim makes the caller the partition's writer, fencing every earlier one.
// floor is the highest epoch recorded elsewhere (PostgreSQL), so epochs keep
// growing across a Redis wipe. fresh says the partition has never run
// anywhere, so a url missing from Redis is a new url, not an evicted one.
func (s *State) Claim(ctx context.Context, floor uint64, fresh bool) (Claim, error) {
	res, err := claimScript.Exec(ctx, s.client, []string{s.metaKey},
		[]string{strconv.FormatUint(floor, 10), flag(fresh)}).ToArray()
	if err != nil {
		return Claim{}, fmt.Errorf("state: claim partition %d: %w", s.opts.Partition, err)
	}
	epochText, _ := res[0].ToString()
	epoch, err := strconv.ParseUint(epochText, 10, 64)
	if err != nil {
		return Claim{}, fmt.Errorf("state: claim partition %d: epoch %q: %w", s.opts.Partition, epochText, err)
	}
	c := Claim{Epoch: epoch}
	if appliedText, err := res[1].ToString(); err == nil {
		if c.Applied, err = strconv.ParseInt(appliedText, 10, 64); err != nil {
			return Claim{}, fmt.Errorf("state: claim partition %d: applied offset %q: %w", s.opts.Partition, appliedText, err)
		}
		c.HasApplied = true
	}
	return c, nil
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
	// Emitted holds the states to publish, in update order.
	Emitted []document.Document
	// Unchanged counts updates that changed nothing (duplicates, and
	// versions between the first and the last).
	Unchanged int
	// ReadThrough counts urls whose state came from PostgreSQL.
	ReadThrough int
}

// Loader reads states that Redis no longer has (PostgreSQL's copy).
type Loader interface {
	Load(ctx context.Context, urls []string) (map[string]document.Document, error)
}

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
	head := []string{strconv.FormatUint(epoch, 10), strconv.FormatInt(next, 10), "0", strconv.Itoa(len(s.docPrefix))}

	res, err := s.apply(ctx, keys, appendUpdates(head, updates, false, nil))
	if err != nil || res.missing == nil {
		return res.Result, err
	}
	// Read through: one query for every url Redis lacks, then the same call
	// again with those states; nobody else writes meanwhile (the epoch).
	urls := make([]string, 0, len(res.missing))
	for _, i := range res.missing {
		urls = append(urls, updates[i].Doc.URL)
	}
	stored, err := loader.Load(ctx, urls)
	if err != nil {
		return Result{}, fmt.Errorf("state: read through %d urls: %w", len(urls), err)
	}
	head[2] = "1"
	res, err = s.apply(ctx, keys, appendUpdates(head, updates, true, stored))
	if err == nil && res.missing != nil {
		err = fmt.Errorf("state: apply: %d urls still missing after read-through", len(res.missing))
	}
	res.ReadThrough = len(urls)
	return res.Result, err
}

type applyResult struct {
	Result
	missing []int64
}

func (s *State) apply(ctx context.Context, keys, args []string) (applyResult, error) {
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
	updateCount := (len(keys) - 2)
	for _, row := range rows {
		d, err := emittedState(row, keys, len(s.docPrefix), updateCount, args)
		if err != nil {
			return applyResult{}, fmt.Errorf("state: apply batch: reading emitted state: %w", err)
		}
		out.Emitted = append(out.Emitted, d)
	}
	return out, nil
}

// emittedState decodes {index, p, f, ff, text or nil}; a nil text means
// the update's own text, which the script does not send back.
func emittedState(row rueidis.RedisMessage, keys []string, prefixLen, n int, args []string) (document.Document, error) {
	f, err := row.ToArray()
	if err != nil || len(f) != 5 {
		return document.Document{}, fmt.Errorf("malformed row (%v)", err)
	}
	i, err := f[0].AsInt64()
	if err != nil || i < 0 || int(i) >= n {
		return document.Document{}, fmt.Errorf("bad update index (%v)", err)
	}
	var d document.Document
	d.URL = keys[2+i][prefixLen:]
	var nums [3]uint64
	for j, m := range f[1:4] {
		text, err := m.ToString()
		if err == nil {
			nums[j], err = strconv.ParseUint(text, 10, 64)
		}
		if err != nil {
			return document.Document{}, fmt.Errorf("bad number: %w", err)
		}
	}
	d.PubDate, d.FetchTime, d.FirstFetchTime = nums[0], nums[1], nums[2]
	if d.Text, err = f[4].ToString(); err != nil {
		d.Text = updateText(args, int(i))
	}
	return d, nil
}

func updateText(args []string, i int) string {
	stride := 4
	if args[2] == "1" {
		stride = 9
	}
	return args[4+i*stride+3]
}

// appendUpdates encodes updates as apply.lua reads them, with the base states
// read from PostgreSQL when withBase.
func appendUpdates(args []string, updates []Update, withBase bool, stored map[string]document.Document) []string {
	for _, u := range updates {
		args = append(args, string(u.Emit), padded(u.Doc.PubDate), padded(u.Doc.FetchTime), u.Doc.Text)
		if !withBase {
			continue
		}
		base, found := stored[u.Doc.URL]
		if !found {
			args = append(args, "-", "", "", "", "")
			continue
		}
		args = append(args, "+", padded(base.PubDate), padded(base.FetchTime), base.Text, padded(base.FirstFetchTime))
	}
	return args
}

// padded spells v in 20 digits, the width of the largest uint64, so that
// the script can compare numbers as strings.
func padded(v uint64) string {
	s := strconv.FormatUint(v, 10)
	return strings.Repeat("0", 20-len(s)) + s
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// classify turns the scripts' error replies into ErrFenced and ErrLost.
func (s *State) classify(op string, err error) error {
	if rerr, ok := rueidis.IsRedisErr(err); ok {
		switch {
		case strings.HasPrefix(rerr.Error(), "DXFENCED"):
			return fmt.Errorf("%w (partition %d: %s)", ErrFenced, s.opts.Partition, rerr.Error())
		case strings.HasPrefix(rerr.Error(), "DXLOST"):
			return fmt.Errorf("%w (partition %d)", ErrLost, s.opts.Partition)
		}
	}
	return fmt.Errorf("state: %s of partition %d: %w", op, s.opts.Partition, err)
}
