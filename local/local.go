// Package local is `docexec local`: the whole pipeline in one process, with
// an in-process Kafka (franz-go's kfake, the real wire protocol), an
// in-process Redis (miniredis) and SQLite through gorm in place of
// PostgreSQL, each replaceable by a real server with a flag. It runs the
// same executor code as production, one per partition.
package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kfake"
	"golang.org/x/sync/errgroup"

	"github.com/docexec/docexec/executor"
	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/config"
	"github.com/docexec/docexec/executor/health"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/leader"
	"github.com/docexec/docexec/executor/metrics"
	"github.com/docexec/docexec/executor/pipeline"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/executor/store"
	"github.com/docexec/docexec/internal/redact"
)

// Topic names of local mode.
const (
	InputTopic      = "updates"
	OutputTopic     = "states"
	DeadLetterTopic = "dead-letters"
	pool            = "local"
)

type options struct {
	input, output, deadLetter string
	partitions, replicas      int
	kafka, redis, postgres    string
	sqlite, listen, logFormat string
	batchSize                 int
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.input, "input", "", "JSONL updates to process, a file or - for stdin (none: keep serving)")
	fs.StringVar(&o.output, "output", "", "where every emitted state goes as a JSON line, a file or - for stdout")
	fs.StringVar(&o.deadLetter, "dead-letter", "", "file for bad input lines, one JSON line each with the reason")
	fs.IntVar(&o.partitions, "partitions", 4, "partitions of the input topic, one executor each")
	fs.IntVar(&o.replicas, "replicas", 1, "executors per partition: one leads, the others stand by (1-9)")
	fs.StringVar(&o.kafka, "kafka", "", "comma-separated brokers of a real Kafka instead of the embedded one")
	fs.StringVar(&o.redis, "redis", "", "address of a real Redis instead of the embedded one")
	fs.StringVar(&o.postgres, "postgres", "", "DSN of a real PostgreSQL instead of SQLite")
	fs.StringVar(&o.sqlite, "sqlite", "", "SQLite file to keep the states in (default: a temporary file)")
	fs.StringVar(&o.listen, "listen", "", "expose the embedded Kafka at this address, e.g. 127.0.0.1:9092")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.IntVar(&o.batchSize, "batch-size", pipeline.DefaultBatchSize, "messages per batch at most")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: docexec local [--input FILE|-] [--output FILE|-] [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.partitions < 1:
		return o, errors.New("--partitions: must be 1 or more")
	case o.replicas < 1 || o.replicas > 9:
		return o, errors.New("--replicas: must be 1 to 9")
	case o.batchSize < 1:
		return o, errors.New("--batch-size: must be positive")
	case o.listen != "" && o.kafka != "":
		return o, errors.New("--listen exposes the embedded Kafka: it does not go with --kafka")
	}
	return o, nil
}

// Main runs local mode and returns the exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return executor.ExitUsage
	}
	if err != nil {
		fmt.Fprintf(stderr, "docexec local: %v\n", err)
		return executor.ExitUsage
	}
	log := executor.NewLogger(stderr, o.logFormat, redact.DSN(o.postgres)...)
	if err := run(ctx, o, stdin, stdout, stderr, log); err != nil {
		log.Error("Local pipeline failed", "err", err)
		return executor.ExitFailed
	}
	return executor.ExitOK
}

func run(ctx context.Context, o options, stdin io.Reader, stdout, stderr io.Writer, log *slog.Logger) (err error) {
	started := time.Now()
	kcfg, stopKafka, err := startKafka(o)
	if err != nil {
		return err
	}
	defer stopKafka()
	client, err := kafka.Connect(kcfg)
	if err != nil {
		return err
	}
	defer client.Close()
	partitions, err := ensureTopics(client, int32(o.partitions), log)
	if err != nil {
		return err
	}
	redis, stopRedis, err := startRedis(o)
	if err != nil {
		return err
	}
	defer stopRedis()
	st, closeStore, err := openStore(ctx, o)
	if err != nil {
		return err
	}
	defer closeStore()

	out, closeOut, err := create(o.output, stdout)
	if err != nil {
		return err
	}
	dead, closeDead, err := create(o.deadLetter, nil)
	if err != nil {
		closeOut()
		return err
	}
	defer func() {
		if cerr := errors.Join(closeOut(), closeDead()); cerr != nil && err == nil {
			err = fmt.Errorf("write output: %w", cerr)
		}
	}()

	// Collectors first, from each topic's current end, so that they see
	// everything this run emits. They stop before the outputs close.
	output, deadLetters := &collector{sink: out, line: func(r *kafka.Record) []byte { return r.Value }}, &collector{sink: dead, line: deadLetterLine}
	collectCtx, stopCollecting := context.WithCancel(context.WithoutCancel(ctx))
	var collectors errgroup.Group
	defer func() { stopCollecting(); collectors.Wait() }() //nolint:errcheck // collectors return nil
	for p := range partitions {
		for _, c := range []struct {
			topic string
			c     *collector
		}{{OutputTopic, output}, {DeadLetterTopic, deadLetters}} {
			from, err := client.Offset(c.topic, p, kafka.Latest)
			if err != nil {
				return err
			}
			r, err := client.Read(c.topic, p, from)
			if err != nil {
				return err
			}
			collectors.Go(func() error { defer r.Close(); c.c.run(collectCtx, r, log); return nil })
		}
	}

	// Executors, one per partition, stop when the input is processed, when
	// ctx ends, or when one of them fails.
	codecJSON, _ := codec.New(codec.FormatJSON)
	m := metrics.New(prometheus.NewRegistry())
	parts := make([]*metrics.Partition, partitions)
	executors, failed := errgroup.WithContext(ctx)
	execCtx, stopExecutors := context.WithCancel(failed)
	defer func() { stopExecutors(); executors.Wait() }() //nolint:errcheck // an early return has its own error
	var handovers atomic.Int64
	for p := range partitions {
		h := health.New(log.With("partition", p))
		parts[p] = m.Partition(pool, p)
		// The partition's replicas share a lock: one leads, the others
		// stand by, as pods do with the partition's Lease.
		lock := leader.NewLocal(&handovers)
		for range o.replicas {
			exec := pipeline.New(pipeline.Options{
				Pool: pool, Partition: p, InputTopic: InputTopic, OutputTopic: OutputTopic, DeadLetterTopic: DeadLetterTopic,
				Group: config.Group(pool), BatchSize: o.batchSize,
			}, pipeline.Deps{KafkaConfig: kcfg, Kafka: client, Store: st, Codec: codecJSON, Metrics: parts[p], Log: log, Health: h,
				State: state.New(redis, state.Options{Pool: pool, Partition: p, PartitionCount: client.PartitionCount(InputTopic)})})
			executors.Go(func() error { return executor.Lead(execCtx, exec, lock, 100*time.Millisecond, log, h) })
		}
	}
	log.Info("Local pipeline started", "partitions", partitions, "brokers", kcfg.Brokers)
	input := &counting{} // its reader is set once the input is open
	progress := newProgress(stderr, func() status {
		c := countAll(parts)
		return status{read: input.bytes.Load(), total: input.size.Load(), lines: input.lines.Load(),
			processed: c.in, emitted: c.emitted, deadLettered: c.deadLettered}
	})
	defer progress.stop()

	var read int64
	var tooLarge atomic.Int64 // input lines dead-lettered before Kafka
	if o.input != "" {
		in, closeIn, err := open(o.input, stdin)
		if err != nil {
			return err
		}
		if f, ok := in.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				input.size.Store(fi.Size())
			}
		}
		input.r = in
		limit, _, err := client.MaxMessageBytes(InputTopic)
		if err != nil {
			closeIn()
			return err
		}
		read, err = feed(failed, kcfg, limit, input, codecJSON, func(line []byte, why string) {
			tooLarge.Add(1)
			deadLetters.write(deadLetterJSON(why, InputTopic, -1, -1, line), true)
		})
		closeIn()
		if err != nil {
			stopExecutors()
			return errors.Join(executors.Wait(), err)
		}
		if err := waitProcessed(failed, client, partitions); err != nil {
			stopExecutors()
			return errors.Join(executors.Wait(), err)
		}
	} else {
		log.Info("No --input: serving until interrupted", "input topic", InputTopic)
		<-failed.Done()
	}
	stopExecutors()
	if err := executors.Wait(); err != nil {
		return err
	}
	// The executors are done and their counts final: wait for the
	// collectors to hold all of it.
	final := countAll(parts)
	deadline := time.Now().Add(30 * time.Second)
	for output.seen.Load() < final.emitted || deadLetters.seen.Load() < final.deadLettered {
		if time.Now().After(deadline) {
			return fmt.Errorf("collected %d states and %d dead letters of %d and %d", output.seen.Load(), deadLetters.seen.Load(), final.emitted, final.deadLettered)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopCollecting()
	collectors.Wait() //nolint:errcheck // collectors return nil
	progress.stop()
	if err := errors.Join(output.err, deadLetters.err); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if o.input == "" {
		read = final.in
	}
	elapsed := time.Since(started)
	fmt.Fprintf(stderr, "docexec local: read %d, emitted %d, unchanged %d, dead-lettered %d, handovers %d in %s (%.0f docs/s)\n",
		read, final.emitted, final.unchanged, final.deadLettered+tooLarge.Load(), handovers.Load(), elapsed.Round(time.Millisecond), float64(final.in)/elapsed.Seconds())
	return nil
}

// ensureTopics creates the topics with the partitions asked for, or takes
// an existing input topic's count; output and dead letters need as many.
func ensureTopics(client *kafka.Client, partitions int32, log *slog.Logger) (int32, error) {
	for _, t := range []string{InputTopic, OutputTopic, DeadLetterTopic} {
		if err := client.EnsureTopic(t, partitions); err != nil {
			return 0, err
		}
	}
	have, err := client.Partitions(InputTopic)
	if err != nil {
		return 0, err
	}
	if have != partitions {
		log.Warn("The input topic exists with another partition count; following it", "topic", InputTopic, "partitions", have)
	}
	for _, t := range []string{OutputTopic, DeadLetterTopic} {
		n, err := client.Partitions(t)
		if err != nil {
			return 0, err
		}
		if n < have {
			return 0, fmt.Errorf("topic %s has %d partitions, fewer than the %d of %s", t, n, have, InputTopic)
		}
	}
	return have, nil
}

type counts struct{ in, emitted, unchanged, deadLettered int64 }

// countAll sums the partitions' counters.
func countAll(parts []*metrics.Partition) counts {
	var c counts
	for _, p := range parts {
		c.in += int64(counterValue(p.In))
		c.emitted += int64(counterValue(p.Emitted))
		c.unchanged += int64(counterValue(p.Unchanged))
		for _, d := range p.DeadLettered {
			c.deadLettered += int64(counterValue(d))
		}
	}
	return c
}

func startKafka(o options) (kafka.Config, func(), error) {
	if o.kafka != "" {
		return kafka.Config{Brokers: strings.Split(o.kafka, ",")}, func() {}, nil
	}
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	if o.listen != "" {
		opts = append(opts, kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, o.listen) }))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return kafka.Config{}, nil, fmt.Errorf("start embedded Kafka: %w", err)
	}
	return kafka.Config{Brokers: c.ListenAddrs()}, c.Close, nil
}

func startRedis(o options) (rueidis.Client, func(), error) {
	opt := rueidis.ClientOption{InitAddress: []string{o.redis}, DisableCache: true, DisableRetry: true}
	stop := func() {}
	if o.redis == "" {
		m, err := miniredis.Run()
		if err != nil {
			return nil, nil, fmt.Errorf("start embedded Redis: %w", err)
		}
		// miniredis refuses client tracking and cross-slot checks.
		opt = rueidis.ClientOption{InitAddress: []string{m.Addr()}, DisableCache: true, DisableRetry: true, ForceSingleClient: true}
		stop = m.Close
	}
	c, err := rueidis.NewClient(opt)
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("connect to Redis: %w", err)
	}
	return c, func() { c.Close(); stop() }, nil
}

// openStore opens the store local mode keeps states in, and returns the
// function that closes it (and removes a temporary database).
func openStore(ctx context.Context, o options) (*store.Store, func(), error) {
	var st *store.Store
	var err error
	cleanup := func() {}
	switch {
	case o.postgres != "":
		st, err = store.OpenPostgres(ctx, o.postgres, store.Options{})
	case o.sqlite != "":
		st, err = store.OpenSQLite(ctx, o.sqlite, store.Options{})
	default:
		dir, derr := os.MkdirTemp("", "docexec-local-")
		if derr != nil {
			return nil, nil, derr
		}
		cleanup = func() { os.RemoveAll(dir) }
		st, err = store.OpenSQLite(ctx, filepath.Join(dir, "states.db"), store.Options{})
	}
	if err == nil {
		err = st.Migrate(ctx)
		if err != nil {
			st.Close()
		}
	}
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return st, func() { st.Close(); cleanup() }, nil
}

// feed produces every non-blank line to the input topic keyed by its url
// (lines that do not decode go unkeyed: the executor dead-letters them). A
// line larger than the topic accepts (limit, its max.message.bytes) goes
// to tooLarge instead. It sends a batch when it is full or when no more
// input is at hand, so a stream on stdin flows line by line.
func feed(ctx context.Context, cfg kafka.Config, limit int, in io.Reader, c codec.Codec, tooLarge func(line []byte, why string)) (int64, error) {
	p, err := kafka.NewProducer(cfg, limit)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	r := bufio.NewReaderSize(in, 1<<20)
	var n int64
	batch := make([]kafka.Message, 0, 1000)
	send := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := p.Send(batch)
		batch = batch[:0]
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if r.Buffered() == 0 { // the next read may wait: send what we have
			if err := send(); err != nil {
				return n, err
			}
		}
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			n++
			m := kafka.Message{Topic: InputTopic, Value: bytes.TrimRight(line, "\r\n")}
			if d, derr := c.Decode(m.Value); derr == nil {
				m.Key = []byte(d.URL)
			}
			if !p.Fits(m) {
				tooLarge(m.Value, fmt.Sprintf("line too large for topic %s: %d bytes with its key, more than the %d that max.message.bytes %d allows", InputTopic, kafka.RecordBytes(m), p.Budget(), limit))
				continue
			}
			batch = append(batch, m)
			if len(batch) == cap(batch) {
				if err := send(); err != nil {
					return n, err
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return n, send()
		}
		if err != nil {
			return n, fmt.Errorf("read input: %w", err)
		}
	}
}

// waitProcessed waits until every input partition's offset is committed up
// to its end.
func waitProcessed(ctx context.Context, client *kafka.Client, partitions int32) error {
	for p := range partitions {
		end, err := client.Offset(InputTopic, p, kafka.Latest)
		if err != nil {
			return err
		}
		for {
			off, _, err := client.Committed(config.Group(pool), InputTopic, p)
			if err != nil {
				return err
			}
			if off >= end {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// collector writes the messages of some partitions' readers as lines of
// one sink and counts them.
type collector struct {
	sink *bufio.Writer // nil: count only
	line func(*kafka.Record) []byte
	seen atomic.Int64
	mu   sync.Mutex
	err  error
}

// run copies one reader until ctx ends or the reader stops.
func (c *collector) run(ctx context.Context, r *kafka.Reader, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case cerr, ok := <-r.Errors():
			if ok {
				log.Warn("Kafka read error; the reader retries", "err", cerr.Err)
			}
		case m, ok := <-r.Messages():
			if !ok {
				return
			}
			// Flush when the reader has nothing more at hand, so that a
			// stream's output flows instead of waiting for a full buffer.
			c.write(c.line(m), len(r.Messages()) == 0)
			c.seen.Add(1)
		}
	}
}

func (c *collector) write(line []byte, flush bool) {
	if c.sink == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.sink.Write(line)
		c.err = c.sink.WriteByte('\n')
	}
	if c.err == nil && flush {
		c.err = c.sink.Flush()
	}
}

// deadLetterLine describes a dead letter as one JSON line.
func deadLetterLine(m *kafka.Record) []byte {
	header := func(k string) string {
		for _, h := range m.Headers {
			if string(h.Key) == k {
				return string(h.Value)
			}
		}
		return ""
	}
	off, _ := strconv.ParseInt(header(pipeline.HeaderOffset), 10, 64)
	part, _ := strconv.Atoi(header(pipeline.HeaderPartition))
	return deadLetterJSON(header(pipeline.HeaderReason), header(pipeline.HeaderTopic), part, off, m.Value)
}

// deadLetterJSON is the line of --dead-letter: why, where the message was
// (partition and offset -1 for a line that never reached Kafka) and what.
func deadLetterJSON(reason, topic string, partition int, offset int64, line []byte) []byte {
	b, _ := json.Marshal(struct {
		Reason    string `json:"reason"`
		Topic     string `json:"topic"`
		Partition int    `json:"partition"`
		Offset    int64  `json:"offset"`
		Line      string `json:"line"`
	}{reason, topic, partition, offset, string(line)})
	return b
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
