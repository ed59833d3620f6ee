// Package pipeline runs one partition: read → process → write goroutines
// joined by bounded channels, plus the sync to PostgreSQL.
//
//   - read/process: messages are batched by size and time (kafka), decoded,
//     merged by the leader and written to Redis in one fenced transaction per
//     batch, with the batch's output (state);
//   - write: each batch's changed states and dead letters go to Kafka in one
//     transaction that also commits the batch's offset (kafka);
//   - sync: dirty states move to PostgreSQL every interval (syncer).
//
// Redis runs a few batches ahead of Kafka. Where an Engine resumes, and
// what it emits, follows from the group's committed offset C (published),
// the applied offset R in Redis (or, after a Redis loss, PostgreSQL's
// watermark W, from which state is rebuilt) and the configured start. When
// Redis holds the recorded output of every batch from C to R, those are
// published as recorded and it resumes at R: exactly once. Otherwise it
// reads from min(C, R): below C it rebuilds state without publishing (that
// output exists); up to R (after a loss: up to the end of the log at that
// moment) it publishes each url's current state again, as it may never have
// gone out; after that it is normal processing. See locate.
package pipeline

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/fencing"
	"github.com/docexec/docexec/executor/health"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/metrics"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/executor/store"
	"github.com/docexec/docexec/executor/syncer"
	"github.com/docexec/docexec/internal/failpoint"
)

// Defaults for Options' zero values.
const (
	DefaultBatchSize       = 500
	DefaultBatchBytes      = 2 << 20
	DefaultBatchWait       = 20 * time.Millisecond
	DefaultSyncInterval    = time.Second
	DefaultShutdownTimeout = 20 * time.Second
)

// Headers that a dead letter carries.
const (
	HeaderReason    = "docexec-reason"
	HeaderTopic     = "docexec-topic"
	HeaderPartition = "docexec-partition"
	HeaderOffset    = "docexec-offset"
)

// Options describe the partition and how to process it.
type Options struct {
	Pool      string
	Partition int32
	// InputTopic, OutputTopic and DeadLetterTopic name the topics; states
	// go to the output partition of the input's number.
	InputTopic, OutputTopic, DeadLetterTopic string
	// Group is the consumer group whose offsets the output transactions
	// commit (lag tools read it).
	Group string
	// StartOffset is where a partition that never ran starts.
	StartOffset kafka.StartOffset
	// BatchSize, BatchBytes and BatchWait bound a batch: it closes when it
	// holds BatchSize messages, at the message that brings their values to
	// BatchBytes (so at most BatchBytes plus one message), or BatchWait
	// after its first message.
	// The bytes bound what a batch holds in memory at each of its steps:
	// 500 web pages can be 15 MB, and copies of a batch are kept while it is
	// merged, written to Redis and published.
	BatchSize  int
	BatchBytes int
	BatchWait  time.Duration
	// SyncInterval is the time between sync passes; SyncBatch the states
	// per PostgreSQL transaction.
	SyncInterval time.Duration
	SyncBatch    int
	// ShutdownTimeout bounds the final batch, publish and sync after the
	// context ends.
	ShutdownTimeout time.Duration
}

// Store is the PostgreSQL copy (store.Store).
type Store interface {
	state.Loader
	syncer.Store
	Watermark(ctx context.Context, pool string, partition int32) (store.Watermark, bool, error)
	Empty(ctx context.Context) (bool, error)
}

// Deps are the connections an Engine uses; their owner closes them.
type Deps struct {
	KafkaConfig kafka.Config
	Kafka       *kafka.Client
	State       *state.State
	Store       Store
	Codec       codec.Codec
	Metrics     *metrics.Partition
	Log         *slog.Logger
	// Health hears of failures that are being retried (nil: none).
	Health *health.Health
}

// Engine is the data path of one partition: it runs the partition's terms
// (Run), each a claim, the read → process → write goroutines and the sync.
// A process runs one per partition it serves (docexec executor one, docexec
// local one per replica of each partition); who leads is decided outside
// (partition.Lead).
type Engine struct {
	opts  Options
	deps  Deps
	ready atomic.Bool
	// counts add up what the engine did in all its terms, for Counts.
	counts struct{ in, emitted, unchanged, deadLettered atomic.Int64 }
	// published is the offset Kafka committed last in this term: recorded
	// outputs up to it are dropped by the next write.
	published atomic.Int64
}

// New returns the engine of opts' partition; zero options take defaults.
func New(opts Options, deps Deps) *Engine {
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = DefaultBatchBytes
	}
	if opts.BatchWait <= 0 {
		opts.BatchWait = DefaultBatchWait
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = DefaultSyncInterval
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if opts.StartOffset == "" {
		opts.StartOffset = kafka.Earliest
	}
	deps.Log = deps.Log.With("pool", opts.Pool, "partition", opts.Partition)
	return &Engine{opts: opts, deps: deps}
}

// Ready reports whether the engine is processing its partition.
func (e *Engine) Ready() bool { return e.ready.Load() }

// Options returns the options the engine runs with, defaults applied.
func (e *Engine) Options() Options { return e.opts }

// Counts are what an engine did in all its terms, for whoever runs it in
// the same process to report (docexec local's progress and summary). The
// Prometheus metrics count the same for observation; nothing reads them
// back.
type Counts struct {
	// In is the input messages processed, Unchanged the updates among them
	// that changed nothing.
	In, Unchanged int64
	// Emitted is the states published (re-emissions after a handover
	// included), DeadLettered the dead letters published for any reason.
	Emitted, DeadLettered int64
}

// Plus returns the sum of c and o: the counts of two engines.
func (c Counts) Plus(o Counts) Counts {
	return Counts{In: c.In + o.In, Unchanged: c.Unchanged + o.Unchanged, Emitted: c.Emitted + o.Emitted, DeadLettered: c.DeadLettered + o.DeadLettered}
}

// Counts returns what the engine did so far; once Run returned, what its
// terms did.
func (e *Engine) Counts() Counts {
	return Counts{In: e.counts.in.Load(), Unchanged: e.counts.unchanged.Load(), Emitted: e.counts.emitted.Load(), DeadLettered: e.counts.deadLettered.Load()}
}

// countProcessed counts a batch's input messages and its updates that
// changed nothing, in the metrics and the counts.
func (e *Engine) countProcessed(in, unchanged int) {
	e.deps.Metrics.In.Add(float64(in))
	e.deps.Metrics.Unchanged.Add(float64(unchanged))
	e.counts.in.Add(int64(in))
	e.counts.unchanged.Add(int64(unchanged))
}

// countEmitted counts published states, in the metrics and the counts.
func (e *Engine) countEmitted(n int) {
	e.deps.Metrics.Emitted.Add(float64(n))
	e.counts.emitted.Add(int64(n))
}

// countDeadLettered counts published dead letters of a reason, in the
// metrics and the counts.
func (e *Engine) countDeadLettered(why metrics.DeadLetterReason, n int) {
	e.deps.Metrics.DeadLettered[why].Add(float64(n))
	e.counts.deadLettered.Add(int64(n))
}

// Run is one term of the partition: it claims it and processes it until
// ctx ends, then finishes the batch in hand, publishes it, syncs, and
// returns nil. A term also ends with an error: one wrapping fencing.ErrLost
// when Redis lost the partition or went back in time (the next term
// recovers), one wrapping fencing.ErrFenced when a newer executor owns it;
// fencing.Classify tells which. Whoever runs terms (see partition.Lead)
// decides whether this executor may claim it again: a claim opens the
// partition's producer, which fences its current leader.
func (e *Engine) Run(ctx context.Context) error {
	// A term's problems are its own: the next one starts clean, and one
	// that stops (a standby again) reports none.
	e.clearHealth()
	defer e.clearHealth()
	started := false
	err := e.runOnce(ctx, &started)
	if fencing.Classify(err) == fencing.StandBy {
		e.deps.Metrics.Fenced.Inc()
	}
	if err != nil && !started && ctx.Err() != nil {
		// Stopped while starting: nothing was applied, and whatever failed
		// then (a query cut short: context canceled, or a connection
		// dropped under it) failed because of the stop.
		e.deps.Log.Debug("Stopped while starting", "err", err)
		return nil
	}
	return err
}

// The health components a term reports.
var termHealth = []string{"read", "merge", "publish", "sync"}

func (e *Engine) clearHealth() {
	for _, c := range termHealth {
		e.deps.Health.Set(c, nil)
	}
}

// position is where a run starts and how it treats what it replays:
// offsets below committed were published (emit nothing), offsets below
// replayed may have been applied without being published (emit the current
// state), later ones are new (emit changes).
type position struct {
	epoch     uint64
	from      int64 // first offset read
	committed int64
	replayed  int64
	// pending are the recorded outputs of the batches applied but not
	// published, in order: published first, exactly as recorded.
	pending []recorded
}

// locate claims the partition and works out its position. It runs after the
// writer is open: that fenced any older producer, so the committed offset
// read here can no longer move.
func (e *Engine) locate(ctx context.Context, budget int) (position, error) {
	o, d := e.opts, e.deps
	mark, hasMark, err := d.Store.Watermark(ctx, o.Pool, o.Partition)
	if err != nil {
		return position{}, err
	}
	committed, hasCommitted, err := d.Kafka.Committed(o.Group, o.InputTopic, o.Partition)
	if err != nil {
		return position{}, err
	}
	// Redis may treat every missing url as new only if the partition never
	// ran and no state is stored anywhere (urls move between partitions when
	// a topic grows; pools may share a table).
	complete := false
	if !hasMark && !hasCommitted {
		if complete, err = d.Store.Empty(ctx); err != nil {
			return position{}, err
		}
	}
	// Dirty states exist only in Redis: a Redis that may evict them cannot
	// be led on (the term fails, saying why, and is retried).
	if err := d.State.CheckEviction(ctx); err != nil {
		return position{}, err
	}
	claim, err := d.State.Claim(ctx, mark.Epoch, complete)
	if err != nil {
		return position{}, err
	}
	synced := hasMark && mark.Offset != store.NoOffset
	if claim.Forgetting || (claim.HasApplied && synced && claim.Applied < mark.Offset) {
		// Redis went back to before what PostgreSQL holds (an older
		// snapshot restored), or an earlier forgetting was cut short: its
		// states may lack updates that PostgreSQL has, and replay cannot
		// bring back what the log no longer retains. Forget them; they are
		// read through again.
		d.Log.Warn("Redis holds the partition as of an offset older than PostgreSQL's watermark; forgetting its states to read them from PostgreSQL",
			"applied", claim.Applied, "watermark", mark.Offset, "resumingCutShortForget", claim.Forgetting)
		if err := d.State.Forget(ctx, claim.Epoch); err != nil {
			return position{}, err
		}
		claim.HasApplied = false
	}
	// PostgreSQL learns the epoch at once: it is the floor of the next claim
	// should Redis lose the partition, so an epoch is never handed out twice.
	if err := d.Store.Save(ctx, nil, &store.Watermark{Pool: o.Pool, Partition: o.Partition, Offset: store.NoOffset, Epoch: claim.Epoch}); err != nil {
		return position{}, fmt.Errorf("pipeline: record epoch %d: %w", claim.Epoch, err)
	}
	earliest, err := d.Kafka.Offset(o.InputTopic, o.Partition, kafka.Earliest)
	if err != nil {
		return position{}, err
	}
	end, err := d.Kafka.Offset(o.InputTopic, o.Partition, kafka.Latest)
	if err != nil {
		return position{}, err
	}
	// Applied but never published (or the group's offsets expired):
	// everything applied goes out again.
	if !hasCommitted {
		committed = earliest
	}
	// Exactly once: Redis kept the partition, and with it the recorded
	// output of every batch applied since Kafka's commit. Published as
	// recorded, they make the output an uninterrupted leader's.
	if claim.HasApplied && !claim.Stale && claim.Applied >= committed {
		pending, exact, err := e.recorded(ctx, committed, claim.Applied, budget)
		if err != nil {
			return position{}, err
		}
		if exact {
			// An earlier recovery's promise still holds beyond what is applied.
			replayed := max(claim.Applied, claim.Replay)
			return position{epoch: claim.Epoch, from: claim.Applied, committed: claim.Applied, replayed: replayed, pending: pending}, nil
		}
		d.Log.Warn("The recorded outputs do not cover what was applied but not published; publishing the current states of that range again (at least once)",
			"committed", committed, "applied", claim.Applied)
	}
	p := position{epoch: claim.Epoch, committed: committed}
	var resume int64
	switch {
	case claim.HasApplied:
		resume, p.replayed = claim.Applied, claim.Applied
	case synced:
		// Redis lost the partition. PostgreSQL may hold effects of any
		// offset up to the end (the sync stores current states), so
		// nothing unpublished can be told apart by change: emit all.
		resume, p.replayed = mark.Offset, end
	case hasCommitted:
		// Lost before anything was synced: rebuild from the log.
		resume, p.replayed = earliest, end
	default:
		// Never ran: the configured start, nothing to replay.
		if resume, err = d.Kafka.Offset(o.InputTopic, o.Partition, o.StartOffset); err != nil {
			return position{}, err
		}
		p.committed, p.replayed = resume, resume
	}
	// Redis went back in time within a term: the states it lost cannot be
	// told from those it kept (a url it lacks is read from PostgreSQL, which
	// may hold the effect of an update never published), so, as after a
	// loss, every current state up to the end goes out again.
	if claim.Stale {
		p.replayed = max(p.replayed, end)
	}
	// A recovery cut short still owes what it promised.
	p.replayed = max(p.replayed, claim.Replay)
	if claim.Stale || p.replayed > max(resume, claim.Replay) {
		if err := d.State.Recover(ctx, claim.Epoch, p.replayed); err != nil {
			return position{}, err
		}
	}
	p.from = min(p.committed, resume)
	if p.from < earliest {
		d.Log.Warn("Resume offset is no longer retained; starting at the earliest retained offset", "resume", p.from, "earliest", earliest)
		p.from = earliest
	}
	return p, nil
}

// recorded is the output a batch recorded with its states: the records to
// publish in one transaction committing next.
type recorded struct {
	start, next int64
	msgs        []kafka.Message
}

// encode is what a batch records (state.Batch.Output).
func (r recorded) encode() []byte {
	return kafka.AppendMessages(binary.AppendVarint(nil, r.start), r.msgs)
}

func decodeRecorded(next int64, b []byte) (recorded, error) {
	start, n := binary.Varint(b)
	if n <= 0 {
		return recorded{}, fmt.Errorf("pipeline: the recorded output of the batch ending at %d is corrupt", next)
	}
	msgs, rest, err := kafka.DecodeMessages(b[n:])
	if err == nil && len(rest) > 0 {
		err = errors.New("trailing bytes")
	}
	if err != nil {
		return recorded{}, fmt.Errorf("pipeline: the recorded output of the batch ending at %d: %w", next, err)
	}
	return recorded{start: start, next: next, msgs: msgs}, nil
}

// recorded returns the recorded outputs of the batches from offset from
// (Kafka's commit) to offset to (Redis's applied), in order; exact is false
// when they do not cover that range batch after batch (recorded by an
// older docexec, or the group's offset moved by someone else), or when a
// record no longer fits the topics (their limits shrank).
func (e *Engine) recorded(ctx context.Context, from, to int64, budget int) (pending []recorded, exact bool, err error) {
	outputs, err := e.deps.State.Outputs(ctx)
	if err != nil {
		return nil, false, err
	}
	byStart := make(map[int64]recorded, len(outputs))
	for next, b := range outputs {
		if next <= from {
			continue // published already; the next write drops it
		}
		r, err := decodeRecorded(next, b)
		if err != nil {
			e.deps.Log.Warn("Ignoring a recorded output", "err", err)
			return nil, false, nil
		}
		byStart[r.start] = r
	}
	for at := from; at < to; {
		r, ok := byStart[at]
		if !ok {
			return nil, false, nil
		}
		for _, m := range r.msgs {
			if kafka.RecordBytes(m) > budget {
				return nil, false, nil
			}
		}
		pending = append(pending, r)
		at = r.next
	}
	return pending, true, nil
}

// batch is one transaction's worth of output.
type batch struct {
	msgs               []kafka.Message
	next               int64 // the offset to commit
	emitted            int
	badInput, tooLarge int // dead letters
	highWaterMark      int64
	newest             time.Time // the Kafka timestamp of the batch's last message
}

// runOnce runs the term; started says when it began processing.
func (e *Engine) runOnce(ctx context.Context, started *bool) error {
	o, d := e.opts, e.deps
	// Each term reads the topics' limits afresh: a batch the broker refused
	// as too large ends the term, and the next one cuts it to the new size.
	limit, err := e.maxMessageBytes()
	if err != nil {
		return err
	}
	// Opening the writer fences every older producer of the partition.
	writer, err := kafka.NewWriter(d.KafkaConfig, kafka.WriterOptions{
		TransactionalID: kafka.TransactionalID(o.Pool, o.InputTopic, o.Partition),
		Group:           o.Group, InputTopic: o.InputTopic, Partition: o.Partition,
		MaxMessageBytes: limit, Failing: func(err error) { d.Health.Set("publish", err) },
	})
	if err != nil {
		return err
	}
	defer writer.Close()
	pos, err := e.locate(ctx, writer.Budget())
	if err != nil {
		return err
	}
	// What the last leader applied but did not publish goes out first,
	// exactly as it recorded it, each batch with its offset.
	for _, r := range pos.pending {
		if err := writer.Publish(ctx, r.msgs, r.next); err != nil {
			return fmt.Errorf("pipeline: publish the recorded output of the batch ending at %d: %w", r.next, err)
		}
		for _, m := range r.msgs {
			if m.Topic == o.OutputTopic {
				e.countEmitted(1)
			} else {
				e.countDeadLettered(deadLetterReason(m), 1)
			}
		}
	}
	e.published.Store(pos.committed)
	if err := d.Kafka.CheckTopics(o.InputTopic, o.OutputTopic, o.DeadLetterTopic, o.Partition); err != nil {
		return err
	}
	deadLetterPartitions, err := d.Kafka.Partitions(o.DeadLetterTopic)
	if err != nil {
		return err
	}
	reader, err := d.Kafka.Read(kafka.ReadOptions{
		Topic: o.InputTopic, Partition: o.Partition, Offset: pos.from,
		MaxRecords: o.BatchSize, MaxBytes: o.BatchBytes, MaxWait: o.BatchWait,
		Failing: func(err error) { d.Health.Set("read", err) },
	})
	if err != nil {
		return err
	}
	defer reader.Close()
	d.Log.Info("Resumed partition", "epoch", pos.epoch, "from", pos.from, "committed", pos.committed, "replayed", pos.replayed,
		"republished", len(pos.pending))

	// After ctx ends, the last batch, its publish and the final sync get
	// ShutdownTimeout; an error anywhere stops everything at once.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stopTimer := context.AfterFunc(ctx, func() { time.AfterFunc(o.ShutdownTimeout, cancelHard) })
	defer stopTimer()
	g, gctx := errgroup.WithContext(hard)
	syncCtx, stopSync := context.WithCancel(gctx)
	defer stopSync()
	refused := &refusedStates{Engine: e, limit: limit, budget: writer.Budget(), partitions: deadLetterPartitions}
	defer refused.close()
	sync := &syncer.Syncer{State: d.State, Store: d.Store, Pool: o.Pool, Part: o.Partition, Batch: o.SyncBatch, Metrics: d.Metrics, Log: d.Log,
		Health: d.Health, Refused: refused.publish}

	batches := make(chan batch, 2)
	p := processor{Engine: e, pos: pos, deadLetterPartitions: deadLetterPartitions, limit: limit, budget: writer.Budget()}
	g.Go(func() error { defer close(batches); return p.run(gctx, ctx, reader, batches) })
	g.Go(func() error { defer stopSync(); return e.write(gctx, writer, batches) })
	g.Go(func() error { return sync.Run(syncCtx, pos.epoch, o.SyncInterval) })
	*started = true
	e.ready.Store(true)
	d.Health.Set(HealthTerm, nil)
	d.Metrics.Led(true)
	defer func() { e.ready.Store(false); d.Metrics.Led(false) }()
	if err := g.Wait(); err != nil {
		return err
	}
	rows, err := sync.Pass(hard, pos.epoch)
	if err != nil {
		return fmt.Errorf("pipeline: final sync: %w", err)
	}
	d.Log.Info("Stopped partition after a final sync", "synced", rows)
	return nil
}

// HealthTerm is the health component of the partition's terms: who runs
// Run sets it when a term fails; Run clears it once processing again.
const HealthTerm = "term"

// maxMessageBytes returns the largest record batch that both the output and
// the dead-letter topic accept.
func (e *Engine) maxMessageBytes() (int, error) {
	limit := 0
	for _, topic := range []string{e.opts.OutputTopic, e.opts.DeadLetterTopic} {
		n, source, err := e.deps.Kafka.MaxMessageBytes(topic)
		if err != nil {
			return 0, err
		}
		e.deps.Log.Debug("Read a topic's size limit", "topic", topic, "maxMessageBytes", n, "source", source)
		if limit == 0 || n < limit {
			limit = n
		}
	}
	return limit, nil
}

// write publishes batches in order until the channel closes.
func (e *Engine) write(ctx context.Context, w *kafka.Writer, batches <-chan batch) error {
	m := e.deps.Metrics
	for b := range batches {
		started := time.Now()
		if err := w.Publish(ctx, b.msgs, b.next); err != nil {
			return fmt.Errorf("pipeline: publish batch ending at offset %d: %w", b.next, err)
		}
		m.PublishSeconds.Observe(time.Since(started).Seconds())
		e.published.Store(b.next)
		e.countEmitted(b.emitted)
		e.countDeadLettered(metrics.BadInput, b.badInput)
		e.countDeadLettered(metrics.TooLarge, b.tooLarge)
		m.Committed(b.next, b.highWaterMark, b.newest)
	}
	return nil
}

// processor is the read → process stage of one run.
type processor struct {
	*Engine
	pos                  position
	deadLetterPartitions int32
	// limit is the output and dead-letter topics' max.message.bytes;
	// budget the largest record the writer sends (kafka.RecordBytes).
	limit, budget int
}

// run processes batches until finish ends (then it processes the batch in
// hand) or ctx ends (then it drops it).
func (p *processor) run(ctx, finish context.Context, r *kafka.Reader, out chan<- batch) error {
	polling, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	defer context.AfterFunc(finish, stopPolling)()
	for {
		records, err := r.Poll(polling)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		finished := err != nil && finish.Err() != nil
		if err != nil && !finished {
			return fmt.Errorf("pipeline: %w", err) // the reader stopped
		}
		if len(records) > 0 {
			b, err := p.process(ctx, records, r.HighWaterMark())
			if err != nil {
				return err
			}
			select {
			case out <- b:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if finished {
			return nil
		}
	}
}

// process decodes and merges one batch and returns what to publish.
func (p *processor) process(ctx context.Context, msgs []kafka.Record, highWaterMark int64) (batch, error) {
	started := time.Now()
	o, d := p.opts, p.deps
	b := batch{next: msgs[len(msgs)-1].Offset + 1, highWaterMark: highWaterMark, newest: msgs[len(msgs)-1].Timestamp}
	updates := make([]state.Update, 0, len(msgs))
	sources := make([]*kafka.Record, 0, len(msgs)) // of each update
	for i := range msgs {
		m := &msgs[i]
		emit := state.EmitChanged
		switch {
		case m.Offset < p.pos.committed:
			emit = state.EmitNever
		case m.Offset < p.pos.replayed:
			emit = state.EmitAlways
		}
		doc, err := d.Codec.Decode(m.Value)
		if err != nil {
			if emit != state.EmitNever {
				b.msgs = append(b.msgs, p.deadLetter(m, m.Key, m.Value, reason(err)))
				b.badInput++
			}
			continue
		}
		updates = append(updates, state.Update{Doc: doc, Emit: emit})
		sources = append(sources, m)
	}
	merging := time.Now()
	res, err := p.prepare(ctx, updates, b.next)
	if err != nil {
		return batch{}, err
	}
	for i, s := range res.Emitted {
		out := kafka.Message{Topic: o.OutputTopic, Partition: o.Partition, Key: []byte(s.URL), Value: d.Codec.Encode(s)}
		if size := kafka.RecordBytes(out); size > p.budget {
			// Stored in Redis (and soon PostgreSQL) all the same: only its
			// publication is impossible, which a small dead letter says.
			why := fmt.Sprintf(tooLargeReason+": %d bytes, more than the %d that topics of max.message.bytes %d take; it is stored in Redis and PostgreSQL", size, p.budget, p.limit)
			b.msgs = append(b.msgs, p.deadLetter(sources[res.EmittedBy[i]], out.Key, nil, why))
			b.tooLarge++
			continue
		}
		b.msgs = append(b.msgs, out)
		b.emitted++
	}
	// The batch's output is recorded with its states, in one step: a new
	// leader publishes exactly that if Kafka never committed it.
	res.Output = recorded{start: msgs[0].Offset, next: b.next, msgs: b.msgs}.encode()
	res.Published = p.published.Load()
	if err := p.commit(ctx, res); err != nil {
		return batch{}, err
	}
	d.Metrics.RedisSeconds.Observe(time.Since(merging).Seconds())
	failpoint.Hit(failpoint.AfterRedisWrite)
	p.countProcessed(len(msgs), res.Unchanged)
	d.Metrics.ReadThrough.Add(float64(res.ReadThrough))
	d.Metrics.BatchSeconds.Observe(time.Since(started).Seconds())
	return b, nil
}

// tooLargeReason starts the reason of a state too large to publish.
const tooLargeReason = "state too large to publish"

// deadLetterReason classes a recorded dead letter by its reason header
// (the first): the recorded output holds those of bad input and of states
// too large to publish (refused states are sent by the sync, unrecorded).
func deadLetterReason(dl kafka.Message) metrics.DeadLetterReason {
	if bytes.HasPrefix(dl.Headers[0].Value, []byte(tooLargeReason)) {
		return metrics.TooLarge
	}
	return metrics.BadInput
}

// reason is what a dead letter says of a decoding error.
func reason(err error) string {
	var bad *codec.BadInputError
	if errors.As(err, &bad) {
		return bad.Reason
	}
	return err.Error()
}

// prepare merges updates into the partition's states, retrying failures
// that may pass (Redis or PostgreSQL unreachable) until ctx ends.
func (p *processor) prepare(ctx context.Context, updates []state.Update, next int64) (*state.Batch, error) {
	var b *state.Batch
	err := p.retrying(ctx, func() (err error) {
		b, err = p.deps.State.Prepare(ctx, p.pos.epoch, updates, next, p.deps.Store)
		return err
	})
	return b, err
}

// commit writes a prepared batch to Redis, retrying as prepare does: a
// write whose outcome is unknown (its reply lost) is retried as it was
// prepared, the same states and the same output.
func (p *processor) commit(ctx context.Context, b *state.Batch) error {
	return p.retrying(ctx, func() error { return p.deps.State.Commit(ctx, b) })
}

// retrying runs op until it succeeds, fails for good (the partition is
// lost or fenced) or ctx ends, with a capped backoff between tries; the
// merge's health says what fails meanwhile.
func (p *processor) retrying(ctx context.Context, op func() error) error {
	backoff := 50 * time.Millisecond
	for {
		err := op()
		if err == nil {
			p.deps.Health.Set("merge", nil)
			return nil
		}
		if fencing.Classify(err).EndsTerm() || ctx.Err() != nil {
			return err
		}
		p.deps.Health.Set("merge", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// deadLetter makes the dead letter of input message m: key and value (the
// message's own, for bad input), why, and where m came from.
func (p *processor) deadLetter(m *kafka.Record, key, value []byte, why string) kafka.Message {
	return fitDeadLetter(kafka.Message{
		Topic:     p.opts.DeadLetterTopic,
		Partition: p.opts.Partition % p.deadLetterPartitions,
		Key:       key, Value: value,
		Headers: []kafka.Header{
			{Key: []byte(HeaderReason), Value: []byte(why)},
			{Key: []byte(HeaderTopic), Value: []byte(m.Topic)},
			{Key: []byte(HeaderPartition), Value: []byte(strconv.Itoa(int(m.Partition)))},
			{Key: []byte(HeaderOffset), Value: []byte(strconv.FormatInt(m.Offset, 10))},
		},
	}, p.budget)
}

// fitDeadLetter returns dl (whose first header is the reason) within
// budget: one the dead-letter topic could not take leaves out its value,
// then its key, and says so; the message it is about stays readable where
// the headers say.
func fitDeadLetter(dl kafka.Message, budget int) kafka.Message {
	why := dl.Headers[0].Value
	for _, drop := range []func(){func() { dl.Value = nil }, func() { dl.Key = nil }} {
		size := kafka.RecordBytes(dl)
		if size <= budget {
			return dl
		}
		drop()
		dl.Headers[0].Value = fmt.Appendf(nil, "%s (the dead letter left out the message's key or value: %d bytes are more than the dead-letter topic takes)", why, size)
	}
	// Headers alone too large (a limit of a few hundred bytes): keep the
	// reason's start, whatever is needed to publish at all.
	if over := kafka.RecordBytes(dl) - budget; over > 0 {
		r := dl.Headers[0].Value
		dl.Headers[0].Value = r[:max(0, len(r)-over)]
	}
	return dl
}

// refusedStates publishes a dead letter for each state PostgreSQL refuses,
// with a producer of its own (the sync runs beside the transactions),
// opened at the first one: most terms never need it.
type refusedStates struct {
	*Engine
	limit, budget int
	partitions    int32 // of the dead-letter topic
	producer      *kafka.Producer
}

func (r *refusedStates) publish(ctx context.Context, d document.Document, why string) error {
	if r.producer == nil {
		p, err := kafka.NewPartitionProducer(r.deps.KafkaConfig, r.limit)
		if err != nil {
			return err
		}
		r.producer = p
	}
	dl := fitDeadLetter(kafka.Message{
		Topic:     r.opts.DeadLetterTopic,
		Partition: r.opts.Partition % r.partitions,
		Key:       []byte(d.URL), Value: r.deps.Codec.Encode(d),
		Headers: []kafka.Header{
			{Key: []byte(HeaderReason), Value: []byte(why)},
			{Key: []byte(HeaderTopic), Value: []byte(r.opts.InputTopic)},
			{Key: []byte(HeaderPartition), Value: []byte(strconv.Itoa(int(r.opts.Partition)))},
		},
	}, r.budget)
	// The sync's context bounds the wait (by the shutdown timeout at the
	// last sync): the state of a send it gives up on stays to sync, so the
	// next pass tries again.
	if err := r.producer.Send(ctx, []kafka.Message{dl}); err != nil {
		return err
	}
	r.countDeadLettered(metrics.Refused, 1)
	return nil
}

func (r *refusedStates) close() {
	if r.producer != nil {
		r.producer.Close() //nolint:errcheck // a send it cuts short is retried by the next pass
	}
}
