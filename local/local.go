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
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/metrics"
	"github.com/docexec/docexec/executor/pipeline"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/executor/store"
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
	fs.IntVar(&o.replicas, "replicas", 1, "executors per partition (only 1 so far)")
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
	case o.replicas != 1:
		return o, errors.New("--replicas: only 1 is supported so far")
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
	log := executor.NewLogger(stderr, o.logFormat)
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
	for _, t := range []string{InputTopic, OutputTopic, DeadLetterTopic} {
		if err := client.EnsureTopic(t, int32(o.partitions)); err != nil {
			return err
		}
	}
	redis, stopRedis, err := startRedis(o)
	if err != nil {
		return err
	}
	defer stopRedis()
	st, err := openStore(ctx, o)
	if err != nil {
		return err
	}
	defer st.Close()

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

	json, _ := codec.New(codec.FormatJSON)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	parts := make([]*metrics.Partition, o.partitions)

	// Executors stop when stopExecutors is called (input done, or ctx).
	execCtx, stopExecutors := context.WithCancel(ctx)
	defer stopExecutors()
	collectCtx, stopCollecting := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCollecting()
	executors, _ := errgroup.WithContext(execCtx)
	collectors, _ := errgroup.WithContext(collectCtx)
	var emittedSeen, deadSeen atomic.Int64
	sink := &lineSink{w: out}
	deadSink := &lineSink{w: dead}
	for p := range int32(o.partitions) {
		parts[p] = m.Partition(pool, p)
		exec := pipeline.New(pipeline.Options{
			Pool: pool, Partition: p, InputTopic: InputTopic, OutputTopic: OutputTopic, DeadLetterTopic: DeadLetterTopic,
			Group: "docexec-" + pool, BatchSize: o.batchSize,
		}, pipeline.Deps{KafkaConfig: kcfg, Kafka: client, Store: st, Codec: json, Metrics: parts[p], Log: log,
			State: state.New(redis, state.Options{Pool: pool, Partition: p})})
		executors.Go(func() error { return exec.Run(execCtx) })
		for _, c := range []struct {
			topic string
			sink  *lineSink
			seen  *atomic.Int64
			line  func(*kafka.Record) []byte
		}{{OutputTopic, sink, &emittedSeen, func(r *kafka.Record) []byte { return r.Value }}, {DeadLetterTopic, deadSink, &deadSeen, deadLetterLine}} {
			from, err := client.Offset(c.topic, p, kafka.Latest)
			if err != nil {
				return err
			}
			r, err := client.Read(c.topic, p, from)
			if err != nil {
				return err
			}
			collectors.Go(func() error { defer r.Close(); return collect(collectCtx, r, c.sink, c.seen, c.line) })
		}
	}
	log.Info("Local pipeline started", "partitions", o.partitions, "brokers", kcfg.Brokers)

	total := func(f func(*metrics.Partition) prometheus.Counter) int64 {
		var n float64
		for _, p := range parts {
			n += counterValue(f(p))
		}
		return int64(n)
	}
	progress := newProgress(stderr, func() string {
		return fmt.Sprintf("processed %d, emitted %d, dead-lettered %d", total(func(p *metrics.Partition) prometheus.Counter { return p.In }),
			total(func(p *metrics.Partition) prometheus.Counter { return p.Emitted }), total(func(p *metrics.Partition) prometheus.Counter { return p.DeadLettered }))
	})
	defer progress.stop()

	var read int64
	if o.input != "" {
		in, closeIn, err := open(o.input, stdin)
		if err != nil {
			return err
		}
		read, err = feed(kcfg, in, json)
		closeIn()
		if err != nil {
			return err
		}
		if err := waitProcessed(ctx, client, o.partitions); err != nil {
			return err
		}
		// Everything is committed; wait until the collectors hold it all.
		for emittedSeen.Load() < total(func(p *metrics.Partition) prometheus.Counter { return p.Emitted }) ||
			deadSeen.Load() < total(func(p *metrics.Partition) prometheus.Counter { return p.DeadLettered }) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	} else {
		log.Info("No --input: serving until interrupted", "input topic", InputTopic)
		<-ctx.Done()
	}
	stopExecutors()
	if err := executors.Wait(); err != nil {
		return err
	}
	stopCollecting()
	if err := collectors.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	progress.stop()
	if err := errors.Join(sink.err, deadSink.err); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	in := total(func(p *metrics.Partition) prometheus.Counter { return p.In })
	if read == 0 {
		read = in
	}
	elapsed := time.Since(started)
	fmt.Fprintf(stderr, "docexec local: read %d, emitted %d, unchanged %d, dead-lettered %d in %s (%.0f docs/s)\n",
		read, total(func(p *metrics.Partition) prometheus.Counter { return p.Emitted }),
		total(func(p *metrics.Partition) prometheus.Counter { return p.Unchanged }),
		total(func(p *metrics.Partition) prometheus.Counter { return p.DeadLettered }),
		elapsed.Round(time.Millisecond), float64(in)/elapsed.Seconds())
	return nil
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
	opt := rueidis.ClientOption{InitAddress: []string{o.redis}, DisableCache: true}
	stop := func() {}
	if o.redis == "" {
		m, err := miniredis.Run()
		if err != nil {
			return nil, nil, fmt.Errorf("start embedded Redis: %w", err)
		}
		// miniredis refuses client tracking and cross-slot checks.
		opt = rueidis.ClientOption{InitAddress: []string{m.Addr()}, DisableCache: true, ForceSingleClient: true}
		stop = m.Close
	}
	c, err := rueidis.NewClient(opt)
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("connect to Redis: %w", err)
	}
	return c, func() { c.Close(); stop() }, nil
}

func openStore(ctx context.Context, o options) (*store.Store, error) {
	var st *store.Store
	var err error
	switch {
	case o.postgres != "":
		st, err = store.OpenPostgres(ctx, o.postgres, store.Options{})
	case o.sqlite != "":
		st, err = store.OpenSQLite(ctx, o.sqlite, store.Options{})
	default:
		dir, derr := os.MkdirTemp("", "docexec-local-")
		if derr != nil {
			return nil, derr
		}
		st, err = store.OpenSQLite(ctx, filepath.Join(dir, "states.db"), store.Options{})
	}
	if err != nil {
		return nil, err
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// feed produces every non-blank line to the input topic keyed by its url
// (lines that do not decode go unkeyed: the executor dead-letters them).
func feed(cfg kafka.Config, in io.Reader, c codec.Codec) (int64, error) {
	p, err := kafka.NewProducer(cfg)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var n int64
	batch := make([]kafka.Message, 0, 1000)
	send := func() error {
		err := p.Send(batch)
		batch = batch[:0]
		return err
	}
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		n++
		m := kafka.Message{Topic: InputTopic, Value: append([]byte(nil), line...)}
		if d, err := c.Decode(line); err == nil {
			m.Key = []byte(d.URL)
		}
		batch = append(batch, m)
		if len(batch) == cap(batch) {
			if err := send(); err != nil {
				return n, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return n, fmt.Errorf("read input: %w", err)
	}
	if len(batch) > 0 {
		return n, send()
	}
	return n, nil
}

// waitProcessed waits until every input partition's offset is committed up
// to its end.
func waitProcessed(ctx context.Context, client *kafka.Client, partitions int) error {
	for p := range int32(partitions) {
		end, err := client.Offset(InputTopic, p, kafka.Latest)
		if err != nil {
			return err
		}
		for {
			off, _, err := client.Committed("docexec-"+pool, InputTopic, p)
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

// lineSink writes JSON lines from several collectors, one line at a time.
type lineSink struct {
	mu  sync.Mutex
	w   *bufio.Writer // nil: discard
	err error
}

func (s *lineSink) write(line []byte) {
	if s.w == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.w.Write(line)
		s.err = s.w.WriteByte('\n')
	}
}

func collect(ctx context.Context, r *kafka.Reader, sink *lineSink, seen *atomic.Int64, line func(*kafka.Record) []byte) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-r.Messages():
			sink.write(line(m))
			seen.Add(1)
		}
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
	b, _ := json.Marshal(struct {
		Reason    string `json:"reason"`
		Topic     string `json:"topic"`
		Partition int    `json:"partition"`
		Offset    int64  `json:"offset"`
		Line      string `json:"line"`
	}{header(pipeline.HeaderReason), header(pipeline.HeaderTopic), part, off, string(m.Value)})
	return b
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
