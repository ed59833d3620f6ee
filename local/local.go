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
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kfake"
	"golang.org/x/sync/errgroup"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/config"
	"github.com/docexec/docexec/executor/health"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/leader"
	"github.com/docexec/docexec/executor/metrics"
	"github.com/docexec/docexec/executor/partition"
	"github.com/docexec/docexec/executor/pipeline"
	"github.com/docexec/docexec/executor/store"
	"github.com/docexec/docexec/internal/cli"
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
	fs.IntVar(&o.batchSize, "batch-size", config.Default().Batch.Size, "messages per batch at most")
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
	if err != nil {
		return cli.Usage(stderr, "local", err)
	}
	log := cli.NewLogger(stderr, o.logFormat, redact.DSN(o.postgres)...)
	if err := run(ctx, o, stdin, stdout, stderr, log); err != nil {
		log.Error("Local pipeline failed", "err", err)
		return cli.ExitFailed
	}
	return cli.ExitOK
}

// run is one local pipeline: the servers, the collectors of its output, the
// executors and the input, each with its owner; then the summary.
func run(ctx context.Context, o options, stdin io.Reader, stdout, stderr io.Writer, log *slog.Logger) (err error) {
	started := time.Now()
	s, err := startServers(ctx, o, log)
	if err != nil {
		return err
	}
	defer s.close()
	// Collectors first, from each topic's current end, so that they see
	// everything this run emits. They stop before the outputs close.
	col, err := startCollecting(ctx, o, stdout, s, log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := col.close(); cerr != nil && err == nil {
			err = fmt.Errorf("write output: %w", cerr)
		}
	}()
	x, err := startExecutors(ctx, o, s, log)
	if err != nil {
		return err
	}
	defer x.stop() //nolint:errcheck // an early return has its own error
	log.Info("Local pipeline started", "partitions", s.partitions, "brokers", s.cfg.Kafka.Brokers)
	input := &counting{} // its reader is set once the input is open
	progress := newProgress(stderr, func() status { return input.status(x.counts()) })
	defer progress.stop()

	read, err := process(x.failed, o, stdin, s, input, col, log)
	if err := errors.Join(x.stop(), err); err != nil {
		return err
	}
	// The executors are done and their counts final: the collectors are to
	// hold all of it.
	final := x.counts()
	if err := col.finish(final); err != nil {
		return err
	}
	progress.stop()
	if o.input == "" {
		read = final.In
	}
	report(stderr, read, final, col.rejected.Load(), x.handovers.Load(), time.Since(started))
	return nil
}

// report writes the summary of a run: the input lines read, what the
// executors did, the lines dead-lettered before Kafka (rejected) and the
// handovers between replicas.
func report(w io.Writer, read int64, done pipeline.Counts, rejected, handovers int64, elapsed time.Duration) {
	fmt.Fprintf(w, "docexec local: read %d, emitted %d, unchanged %d, dead-lettered %d, handovers %d in %s (%.0f docs/s)\n",
		read, done.Emitted, done.Unchanged, done.DeadLettered+rejected, handovers, elapsed.Round(time.Millisecond), float64(done.In)/elapsed.Seconds())
}

// executorConfig is the configuration of local mode's executors: the
// executor's defaults, with local mode's pool, topics and servers.
func executorConfig(o options, brokers []string, redis string) config.Config {
	cfg := config.Default()
	cfg.Pool = pool
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.InputTopic, cfg.Kafka.OutputTopic, cfg.Kafka.DeadLetterTopic = InputTopic, OutputTopic, DeadLetterTopic
	cfg.Kafka.Group = config.Group(cfg.Identity())
	cfg.Redis.Addresses = []string{redis}
	cfg.Postgres.DSN = o.postgres // none: SQLite
	cfg.Batch.Size = o.batchSize
	// A partition's replicas share a lock in this process: the next one
	// takes over at once, with no Lease to wait out.
	cfg.Leader.RetryPeriod = config.Duration(100 * time.Millisecond)
	return cfg
}

// servers are what local mode's executors connect to, embedded stand-ins
// unless flags name real servers, and the clients of them.
type servers struct {
	cfg        config.Config // of the executors, but for the partition
	kafka      *kafka.Client
	redis      rueidis.Client
	store      *store.Store
	partitions int32
	stops      []func() // in the order started
}

// startServers starts the stand-ins, connects to them and creates the
// topics; close stops them.
func startServers(ctx context.Context, o options, log *slog.Logger) (_ *servers, err error) {
	s := &servers{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	brokers, err := s.startKafka(o)
	if err != nil {
		return nil, err
	}
	redisAddr, err := s.startRedis(o)
	if err != nil {
		return nil, err
	}
	s.cfg = executorConfig(o, brokers, redisAddr)
	if s.kafka, err = kafka.Connect(s.cfg.Kafka.Config); err != nil {
		return nil, err
	}
	s.stops = append(s.stops, func() { s.kafka.Close() })
	if s.partitions, err = ensureTopics(s.kafka, int32(o.partitions), log); err != nil {
		return nil, err
	}
	opt := partition.RedisOptions(s.cfg.Redis)
	opt.ForceSingleClient = o.redis == "" // miniredis refuses client tracking and cross-slot checks
	if s.redis, err = rueidis.NewClient(opt); err != nil {
		return nil, fmt.Errorf("connect to Redis: %w", err)
	}
	s.stops = append(s.stops, s.redis.Close)
	st, closeStore, err := openStore(ctx, o, partition.StoreOptions(s.cfg))
	if err != nil {
		return nil, err
	}
	s.store = st
	s.stops = append(s.stops, closeStore)
	return s, nil
}

// close stops what started, the last first.
func (s *servers) close() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
}

// executors run every partition's replicas, until stop or one of them
// fails, and add up what they do.
type executors struct {
	group     *errgroup.Group
	failed    context.Context // ends when the run's context does or one fails
	cancel    context.CancelFunc
	all       []*pipeline.Engine
	handovers atomic.Int64
}

// startExecutors starts the replicas of each partition, built as `docexec
// executor` builds its own.
func startExecutors(ctx context.Context, o options, s *servers, log *slog.Logger) (*executors, error) {
	group, failed := errgroup.WithContext(ctx)
	runCtx, cancel := context.WithCancel(failed)
	x := &executors{group: group, failed: failed, cancel: cancel}
	m := metrics.New(prometheus.NewRegistry())
	for p := range s.partitions {
		cfg := s.cfg
		cfg.Partition = p
		h := health.New(log.With("partition", p))
		part := m.Partition(cfg.Pool, p)
		// The partition's replicas share a lock: one leads, the others
		// stand by, as pods do with the partition's Lease.
		lock := leader.NewLocal(&x.handovers)
		for range o.replicas {
			exec, err := partition.NewEngine(cfg, s.redis, pipeline.Deps{
				Kafka: s.kafka, Store: s.store, Metrics: part, Log: log, Health: h})
			if err != nil {
				x.stop() //nolint:errcheck // the error is this one
				return nil, err
			}
			x.all = append(x.all, exec)
			x.group.Go(func() error { return partition.Lead(runCtx, exec, lock, time.Duration(cfg.Leader.RetryPeriod), log, h) })
		}
	}
	return x, nil
}

// stop stops the executors and waits for them.
func (x *executors) stop() error {
	x.cancel()
	return x.group.Wait()
}

// counts adds up what the executors did; once stopped, all of it.
func (x *executors) counts() pipeline.Counts {
	var c pipeline.Counts
	for _, e := range x.all {
		c = c.Plus(e.Counts())
	}
	return c
}

// process feeds --input to the input topic and waits until the executors
// committed all of it, or without --input serves until ctx ends; it returns
// the input lines read.
func process(ctx context.Context, o options, stdin io.Reader, s *servers, input *counting, col *collectors, log *slog.Logger) (int64, error) {
	if o.input == "" {
		log.Info("No --input: serving until interrupted", "input topic", InputTopic)
		<-ctx.Done()
		return 0, nil
	}
	read, err := feedInput(ctx, o, stdin, s, input, col)
	if err != nil {
		return read, err
	}
	return read, waitProcessed(ctx, s.kafka, s.cfg.Kafka.Group, s.partitions)
}

// feedInput opens --input and feeds it through input (which counts it) to
// the input topic; lines too large for it go to the collectors.
func feedInput(ctx context.Context, o options, stdin io.Reader, s *servers, input *counting, col *collectors) (int64, error) {
	in, closeIn, err := open(o.input, stdin)
	if err != nil {
		return 0, err
	}
	defer closeIn()
	if f, ok := in.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			input.size.Store(fi.Size())
		}
	}
	input.r = in
	limit, _, err := s.kafka.MaxMessageBytes(InputTopic)
	if err != nil {
		return 0, err
	}
	jsonl, err := codec.New(codec.FormatJSON) // the input's lines
	if err != nil {
		return 0, err
	}
	return feed(ctx, s.cfg.Kafka.Config, limit, input, jsonl, col.reject)
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

// startKafka starts the embedded Kafka unless --kafka names brokers, and
// returns the brokers.
func (s *servers) startKafka(o options) ([]string, error) {
	if o.kafka != "" {
		return strings.Split(o.kafka, ","), nil
	}
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	if o.listen != "" {
		opts = append(opts, kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, o.listen) }))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded Kafka: %w", err)
	}
	s.stops = append(s.stops, c.Close)
	return c.ListenAddrs(), nil
}

// startRedis starts the embedded Redis unless --redis names a server, and
// returns its address.
func (s *servers) startRedis(o options) (string, error) {
	if o.redis != "" {
		return o.redis, nil
	}
	m, err := miniredis.Run()
	if err != nil {
		return "", fmt.Errorf("start embedded Redis: %w", err)
	}
	s.stops = append(s.stops, m.Close)
	return m.Addr(), nil
}

// openStore opens the store local mode keeps states in, and returns the
// function that closes it (and removes a temporary database).
func openStore(ctx context.Context, o options, opts store.Options) (*store.Store, func(), error) {
	var st *store.Store
	var err error
	cleanup := func() {}
	switch {
	case o.postgres != "":
		st, err = store.OpenPostgres(ctx, o.postgres, opts)
	case o.sqlite != "":
		st, err = store.OpenSQLite(ctx, o.sqlite, opts)
	default:
		dir, derr := os.MkdirTemp("", "docexec-local-")
		if derr != nil {
			return nil, nil, derr
		}
		cleanup = func() { os.RemoveAll(dir) }
		st, err = store.OpenSQLite(ctx, filepath.Join(dir, "states.db"), opts)
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
		err := p.Send(ctx, batch)
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

// waitProcessed waits until group committed every input partition up to
// its end.
func waitProcessed(ctx context.Context, client *kafka.Client, group string, partitions int32) error {
	for p := range partitions {
		end, err := client.Offset(InputTopic, p, kafka.Latest)
		if err != nil {
			return err
		}
		for {
			off, _, err := client.Committed(group, InputTopic, p)
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

// collectors copy the output and dead-letter topics, from their ends when
// they start, to --output and --dead-letter.
type collectors struct {
	output, deadLetters *collector
	// rejected counts the input lines dead-lettered before Kafka.
	rejected   atomic.Int64
	group      errgroup.Group
	cancel     context.CancelFunc
	closeFiles func() error
}

// startCollecting creates the outputs and starts a collector of each
// partition of both topics.
func startCollecting(ctx context.Context, o options, stdout io.Writer, s *servers, log *slog.Logger) (_ *collectors, err error) {
	out, closeOut, err := create(o.output, stdout)
	if err != nil {
		return nil, err
	}
	dead, closeDead, err := create(o.deadLetter, nil)
	if err != nil {
		closeOut()
		return nil, err
	}
	// They stop when told, not with ctx: what was published is to reach
	// the outputs.
	collectCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &collectors{
		output:      &collector{sink: out, line: func(r *kafka.Record) []byte { return r.Value }},
		deadLetters: &collector{sink: dead, line: deadLetterLine},
		cancel:      cancel, closeFiles: func() error { return errors.Join(closeOut(), closeDead()) },
	}
	defer func() {
		if err != nil {
			c.close() //nolint:errcheck // the error is this one
		}
	}()
	for p := range s.partitions {
		for _, t := range []struct {
			topic string
			c     *collector
		}{{OutputTopic, c.output}, {DeadLetterTopic, c.deadLetters}} {
			from, err := s.kafka.Offset(t.topic, p, kafka.Latest)
			if err != nil {
				return nil, err
			}
			r, err := s.kafka.Read(kafka.ReadOptions{Topic: t.topic, Partition: p, Offset: from, MaxRecords: collectBatch,
				Failing: func(err error) {
					if err != nil {
						log.Warn("Kafka read error; the reader retries", "err", err)
					}
				}})
			if err != nil {
				return nil, err
			}
			c.group.Go(func() error { defer r.Close(); t.c.run(collectCtx, r); return nil })
		}
	}
	return c, nil
}

// reject dead-letters an input line that never reached Kafka.
func (c *collectors) reject(line []byte, why string) {
	c.rejected.Add(1)
	c.deadLetters.write(deadLetterJSON(why, InputTopic, -1, -1, line), true)
}

// finish waits until the collectors have seen all the executors published
// (their final counts), stops them, and reports a failure to write.
func (c *collectors) finish(final pipeline.Counts) error {
	deadline := time.Now().Add(30 * time.Second)
	for c.output.seen.Load() < final.Emitted || c.deadLetters.seen.Load() < final.DeadLettered {
		if time.Now().After(deadline) {
			return fmt.Errorf("collected %d states and %d dead letters of %d and %d", c.output.seen.Load(), c.deadLetters.seen.Load(), final.Emitted, final.DeadLettered)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.stop()
	if err := errors.Join(c.output.err, c.deadLetters.err); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// stop stops the collectors and waits for them.
func (c *collectors) stop() {
	c.cancel()
	c.group.Wait() //nolint:errcheck // collectors return nil
}

// close stops the collectors, then flushes and closes the outputs.
func (c *collectors) close() error {
	c.stop()
	return c.closeFiles()
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

// collectBatch bounds the records a collector writes between flushes.
const collectBatch = 256

// run copies one reader until ctx ends or the reader stops.
func (c *collector) run(ctx context.Context, r *kafka.Reader) {
	for {
		// A batch is what the reader has at hand; a flush after each makes
		// a stream's output flow instead of waiting for a full buffer.
		records, err := r.Poll(ctx)
		for i := range records {
			c.write(c.line(&records[i]), i == len(records)-1)
			c.seen.Add(1)
		}
		if err != nil {
			return
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
