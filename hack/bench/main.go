// Command bench measures the executor's throughput against its baselines on
// the same machine and servers, in one run, and prints a table:
//
//	(a) raw passthrough: sarama reads the input and republishes every
//	    message, one transaction per batch, no decoding and no state;
//	(b) the executor: the real `docexec executor` binary, real Redis and
//	    PostgreSQL (its peak RSS is read from /proc);
//	(c) naive: one Redis read and one write per message, merge in Go, the
//	    same Kafka output as (a);
//
// and the sync's rows/s from Redis to PostgreSQL. Kafka is kfake in this
// process. `make bench` builds the binary and starts the servers:
//
//	hack/with-services.sh go run ./hack/bench -docexec bin/docexec
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/metrics"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/executor/store"
	"github.com/docexec/docexec/executor/syncer"
	"github.com/docexec/docexec/internal/docgen"
)

const (
	input = "bench-in"
	batch = 500
)

var executorFlags string

func main() {
	messages := flag.Int("messages", 200_000, "input messages")
	urls := flag.Int("urls", 20_000, "distinct urls in the input")
	syncRows := flag.Int("sync-rows", 100_000, "states synced in the sync measurement")
	webBytes := flag.Int64("web-bytes", 400_000_000, "bytes of realistic documents (web-like texts, median ~6 KB) in the second table; 0 skips it")
	binary := flag.String("docexec", "bin/docexec", "the docexec binary to measure as (b)")
	flag.StringVar(&executorFlags, "executor-flags", "", "extra flags for (b), space-separated")
	flag.Parse()
	if err := run(*messages, *urls, *syncRows, *webBytes, *binary); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(n, urls, syncRows int, webBytes int64, binary string) error {
	ctx := context.Background()
	redisAddr, pgDSN := os.Getenv("DOCEXEC_TEST_REDIS"), os.Getenv("DOCEXEC_TEST_POSTGRES")
	if redisAddr == "" || pgDSN == "" {
		return errors.New("DOCEXEC_TEST_REDIS and DOCEXEC_TEST_POSTGRES must be set: run `make bench`")
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, input, webInput, "out-a", "out-b", "out-c", "dlq"))
	if err != nil {
		return err
	}
	defer cluster.Close()
	cfg := kafka.Config{Brokers: cluster.ListenAddrs()}
	client, err := kafka.Connect(cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	redis, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{redisAddr}, DisableCache: true})
	if err != nil {
		return err
	}
	defer redis.Close()
	if err := redis.Do(ctx, redis.B().Flushall().Build()).Error(); err != nil {
		return err
	}
	dsn, dropSchema, err := freshSchema(pgDSN)
	if err != nil {
		return err
	}
	defer dropSchema()

	fmt.Fprintf(os.Stderr, "producing %d messages over %d urls...\n", n, urls)
	small, err := produce(cfg, n, urls)
	if err != nil {
		return err
	}
	var a, b, c time.Duration
	var rss int64
	aCPU, err := machineCPU(func() (err error) { a, err = passthrough(ctx, cfg, client, small, "out-a"); return err })
	if err != nil {
		return fmt.Errorf("(a): %w", err)
	}
	var execCPU time.Duration
	if err := redis.Do(ctx, redis.B().ConfigResetstat().Build()).Error(); err != nil {
		return err
	}
	redisBefore, err := redisCPU(ctx, redis)
	if err != nil {
		return err
	}
	bCPU, err := machineCPU(func() (err error) {
		b, rss, execCPU, err = executorBinary(ctx, binary, cfg, client, redisAddr, dsn, small, "bench-b", "out-b")
		return err
	})
	if err != nil {
		return fmt.Errorf("(b): %w", err)
	}
	redisAfter, err := redisCPU(ctx, redis)
	if err != nil {
		return err
	}
	commands, err := redisCommands(ctx, redis)
	if err != nil {
		return err
	}
	cCPU, err := machineCPU(func() (err error) { c, err = naive(ctx, cfg, client, redis, small); return err })
	if err != nil {
		return fmt.Errorf("(c): %w", err)
	}
	rows, syncTime, err := syncRate(ctx, redis, dsn, syncRows)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}

	fmt.Printf("%d messages of ~%d bytes, %d urls, batches of %d, one partition\n\n", n, messageSize, urls, batch)
	cores := float64(runtime.NumCPU())
	row := func(name string, d, cpu time.Duration) {
		fmt.Printf("| %s | %.0f | %.1f | %.0f%% |\n", name, float64(n)/d.Seconds(), float64(cpu.Microseconds())/float64(n), 100*cpu.Seconds()/(d.Seconds()*cores))
	}
	fmt.Printf("| measurement | docs/s | machine CPU µs/doc | CPU busy |\n|---|---:|---:|---:|\n")
	row("(a) raw sarama passthrough on kfake", a, aCPU)
	row("(b) docexec executor, real Redis + PostgreSQL", b, bCPU)
	row("(c) naive per-message Redis read + write", c, cCPU)
	fmt.Printf("\n| other | value |\n|---|---:|\n")
	fmt.Printf("| sync Redis → PostgreSQL | %.0f rows/s (%d rows) |\n", float64(rows)/syncTime.Seconds(), rows)
	fmt.Printf("| executor peak RSS | %.0f MiB |\n", float64(rss)/(1<<20))
	perDoc := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	fmt.Printf("| (b) CPU µs/doc: executor, redis-server, the rest (kfake, PostgreSQL, ...) | %.1f, %.1f, %.1f |\n",
		perDoc(execCPU), perDoc(redisAfter-redisBefore), perDoc(bCPU-execCPU-(redisAfter-redisBefore)))
	fmt.Printf("| (b) redis-server µs/doc by command (Redis's own count) | %s |\n", commands.perDoc(n))
	fmt.Printf("\n(b)/(a) = %.2f (target >= 0.7), (b)/(c) = %.1f (target >= 5)\n", a.Seconds()/b.Seconds(), c.Seconds()/b.Seconds())
	if webBytes > 0 {
		return realistic(ctx, binary, cfg, client, redisAddr, dsn, webBytes)
	}
	return nil
}

// webInput holds the realistic documents.
const webInput = "bench-web-in"

// realistic measures (a) and (b) on web-like documents, with compression
// off and with each codec, and prints the second table.
func realistic(ctx context.Context, binary string, cfg kafka.Config, client *kafka.Client, redisAddr, dsn string, bytes int64) error {
	fmt.Fprintf(os.Stderr, "producing %d MB of realistic documents...\n", bytes/1e6)
	limit, _, err := client.MaxMessageBytes(webInput)
	if err != nil {
		return err
	}
	w, err := produceWeb(cfg, limit, bytes)
	if err != nil {
		return err
	}
	fmt.Printf("\n%d realistic documents, %.1f MB (texts log-normal, median ~6 KB, up to ~1 MB, every script; urls up to 8 KB), one partition\n\n",
		w.n, float64(w.bytes)/1e6)
	fmt.Printf("| measurement | compression | docs/s | MB/s | machine CPU µs/doc |\n|---|---|---:|---:|---:|\n")
	var ratios []string
	for _, compression := range []string{"none", "lz4", "zstd"} {
		c := cfg
		c.Compression = compression
		var a, b time.Duration
		aCPU, err := machineCPU(func() (err error) { a, err = passthrough(ctx, c, client, w, "out-web-a-"+compression); return err })
		if err != nil {
			return fmt.Errorf("(a) %s: %w", compression, err)
		}
		flags := executorFlags
		// A table of its own: each run stores every state anew.
		executorFlags += " --kafka.compression " + compression + " --postgres.table web_" + compression
		bCPU, err := machineCPU(func() (err error) {
			b, _, _, err = executorBinary(ctx, binary, c, client, redisAddr, dsn, w, "bench-web-"+compression, "out-web-b-"+compression)
			return err
		})
		executorFlags = flags
		if err != nil {
			return fmt.Errorf("(b) %s: %w", compression, err)
		}
		for _, r := range []struct {
			name string
			d    time.Duration
			cpu  time.Duration
		}{{"(a) raw sarama passthrough", a, aCPU}, {"(b) docexec executor", b, bCPU}} {
			fmt.Printf("| %s | %s | %.0f | %.1f | %.0f |\n", r.name, compression, float64(w.n)/r.d.Seconds(),
				float64(w.bytes)/1e6/r.d.Seconds(), float64(r.cpu.Microseconds())/float64(w.n))
		}
		ratios = append(ratios, fmt.Sprintf("%s %.2f", compression, a.Seconds()/b.Seconds()))
	}
	fmt.Printf("\n(b)/(a) in MB/s: %s (target >= 0.7 with compression on)\n", strings.Join(ratios, ", "))
	return nil
}

// produceWeb writes realistic documents (internal/docgen) to webInput,
// whose limit is limit.
func produceWeb(cfg kafka.Config, limit int, bytes int64) (workload, error) {
	// Lines under 1,000,000 bytes fit a topic of Kafka's default limit
	// under every codec's worst case (see kafka.RecordBudget).
	gen, err := docgen.New(docgen.Options{Seed: 7, TotalBytes: bytes, MaxMessageBytes: 1_000_000})
	if err != nil {
		return workload{}, err
	}
	p, err := kafka.NewProducer(cfg, limit)
	if err != nil {
		return workload{}, err
	}
	defer p.Close()
	w := workload{topic: webInput}
	var msgs []kafka.Message
	for l := range gen.Lines() {
		msgs = append(msgs, kafka.Message{Topic: webInput, Key: []byte(l.Update.URL), Value: l.JSON})
		w.n++
		w.bytes += int64(len(l.JSON))
		if len(msgs) == 100 {
			if err := p.Send(msgs); err != nil {
				return workload{}, err
			}
			msgs = msgs[:0]
		}
	}
	return w, p.Send(msgs)
}

// workload is what a measurement reads: n messages, bytes in all, in one
// partition of topic.
type workload struct {
	topic string
	n     int
	bytes int64
}

const messageSize = 220

// produce writes n updates of urls, each url's versions out of order and
// about one in five duplicated.
func produce(cfg kafka.Config, n, urls int) (workload, error) {
	p, err := kafka.NewProducer(cfg, kafka.DefaultMaxMessageBytes)
	if err != nil {
		return workload{}, err
	}
	defer p.Close()
	w := workload{topic: input, n: n}
	r := rand.New(rand.NewPCG(1, 2))
	filler := strings.Repeat("lorem ipsum ", 12)
	msgs := make([]kafka.Message, 0, 2000)
	for i := range n {
		page := r.IntN(urls)
		u := fmt.Sprintf("https://site%d.example/articles/%d", page%50, page)
		fetch := uint64(1_790_000_000 + r.IntN(1_000_000))
		v := fmt.Appendf(nil, `{"url":%q,"pubDate":%d,"fetchTime":%d,"text":"%s%d"}`, u, fetch-3600, fetch, filler, i)
		msgs = append(msgs, kafka.Message{Topic: input, Key: []byte(u), Value: v})
		w.bytes += int64(len(v))
		if r.IntN(5) == 0 {
			msgs = append(msgs, msgs[len(msgs)-1])
		}
		if len(msgs) >= 1000 {
			if err := p.Send(msgs[:1000]); err != nil {
				return workload{}, err
			}
			msgs = append(msgs[:0], msgs[1000:]...)
		}
	}
	return w, p.Send(msgs)
}

// consume reads a workload from the start in batches of up to batch
// messages, handing each to handle, until all were read.
func consume(ctx context.Context, client *kafka.Client, w workload, handle func([]*kafka.Record) error) error {
	n := w.n
	r, err := client.Read(w.topic, 0, 0)
	if err != nil {
		return err
	}
	defer r.Close()
	pending := make([]*kafka.Record, 0, batch)
	for read := 0; read < n; {
		pending = append(pending[:0], <-r.Messages())
	fill:
		for len(pending) < batch && read+len(pending) < n {
			select {
			case m := <-r.Messages():
				pending = append(pending, m)
			default:
				break fill
			}
		}
		read += len(pending)
		if err := handle(pending); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func passthrough(ctx context.Context, cfg kafka.Config, client *kafka.Client, work workload, out string) (time.Duration, error) {
	if err := client.EnsureTopic(out, 1); err != nil {
		return 0, err
	}
	limit, _, err := client.MaxMessageBytes(out)
	if err != nil {
		return 0, err
	}
	w, err := kafka.NewWriter(cfg, kafka.WriterOptions{TransactionalID: "bench-" + out, Group: "bench-" + out, InputTopic: work.topic, MaxMessageBytes: limit})
	if err != nil {
		return 0, err
	}
	defer w.Close()
	start := time.Now()
	err = consume(ctx, client, work, func(ms []*kafka.Record) error {
		msgs := make([]kafka.Message, len(ms))
		for i, m := range ms {
			msgs[i] = kafka.Message{Topic: out, Key: m.Key, Value: m.Value}
		}
		return w.Publish(ctx, msgs, ms[len(ms)-1].Offset+1)
	})
	return time.Since(start), err
}

// naive is the original design: per message, read the url's state from
// Redis, merge in Go, write it back.
func naive(ctx context.Context, cfg kafka.Config, client *kafka.Client, redis rueidis.Client, work workload) (time.Duration, error) {
	w, err := kafka.NewWriter(cfg, kafka.WriterOptions{TransactionalID: "bench-c", Group: "bench-c", InputTopic: input})
	if err != nil {
		return 0, err
	}
	defer w.Close()
	c, _ := codec.New(codec.FormatJSON)
	start := time.Now()
	err = consume(ctx, client, work, func(ms []*kafka.Record) error {
		var out []kafka.Message
		for _, m := range ms {
			u, err := c.Decode(m.Value)
			if err != nil {
				continue
			}
			key := "naive:" + u.URL
			var cur document.Document
			raw, err := redis.Do(ctx, redis.B().Get().Key(key).Build()).AsBytes()
			found := err == nil
			if err != nil && !rueidis.IsRedisNil(err) {
				return err
			}
			if found {
				if err := json.Unmarshal(raw, &cur); err != nil {
					return err
				}
			}
			next, changed := document.Apply(cur, found, u)
			if !changed {
				continue
			}
			b, _ := json.Marshal(next)
			if err := redis.Do(ctx, redis.B().Set().Key(key).Value(string(b)).Build()).Error(); err != nil {
				return err
			}
			out = append(out, kafka.Message{Topic: "out-c", Key: []byte(next.URL), Value: c.Encode(next)})
		}
		return w.Publish(ctx, out, ms[len(ms)-1].Offset+1)
	})
	return time.Since(start), err
}

// executorBinary runs `docexec executor` as pool until it committed the
// whole workload and returns the time, its peak RSS and the CPU time it
// used.
func executorBinary(ctx context.Context, binary string, cfg kafka.Config, client *kafka.Client, redisAddr, dsn string, work workload, pool, out string) (elapsed time.Duration, rss int64, cpu time.Duration, err error) {
	if err := client.EnsureTopic(out, 1); err != nil {
		return 0, 0, 0, err
	}
	cmd := exec.CommandContext(ctx, binary, "executor", "--pool", pool, "--partition", "0",
		"--kafka.brokers", strings.Join(cfg.Brokers, ","), "--kafka.inputTopic", work.topic, "--kafka.outputTopic", out,
		"--kafka.deadLetterTopic", "dlq", "--redis.addresses", redisAddr, "--postgres.dsn", dsn,
		"--batch.size", strconv.Itoa(batch), "--listen", "127.0.0.1:0", "--logFormat", "text")
	cmd.Args = append(cmd.Args, strings.Fields(executorFlags)...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, 0, err
	}
	for {
		off, _, err := client.Committed("docexec-"+pool, work.topic, 0)
		if err != nil {
			cmd.Process.Kill()
			return 0, 0, 0, err
		}
		if off >= int64(work.n) {
			elapsed = time.Since(start)
			break
		}
		if time.Since(start) > 10*time.Minute {
			cmd.Process.Kill()
			return 0, 0, 0, errors.New("the executor did not finish in 10 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if rss, err = peakRSS(cmd.Process.Pid); err != nil {
		return 0, 0, 0, err
	}
	if cpu, err = processCPU(cmd.Process.Pid); err != nil {
		return 0, 0, 0, err
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, 0, 0, err
	}
	if err := cmd.Wait(); err != nil {
		return 0, 0, 0, fmt.Errorf("executor exit: %w", err)
	}
	return elapsed, rss, cpu, nil
}

// machineCPU runs f and returns the CPU time that every process of the
// machine used meanwhile (from /proc/stat): on a small box the executor,
// Redis, PostgreSQL and the broker share the cores.
func machineCPU(f func() error) (time.Duration, error) {
	before, err := busyTicks()
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	after, err := busyTicks()
	if err != nil {
		return 0, err
	}
	return time.Duration(after-before) * 10 * time.Millisecond, nil
}

// busyTicks sums the non-idle jiffies (1/100 s) of all cores.
func busyTicks() (int64, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(strings.SplitN(string(raw), "\n", 2)[0])[1:]
	var busy int64
	for i, f := range fields {
		v, _ := strconv.ParseInt(f, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, nil
}

// processCPU reads the user+system CPU time of a process.
func processCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// redisCPU reads the CPU time redis-server used so far.
func redisCPU(ctx context.Context, redis rueidis.Client) (time.Duration, error) {
	info, err := redis.Do(ctx, redis.B().Info().Section("cpu").Build()).ToString()
	if err != nil {
		return 0, err
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		for _, key := range []string{"used_cpu_sys:", "used_cpu_user:"} {
			if v, ok := strings.CutPrefix(line, key); ok {
				f, _ := strconv.ParseFloat(v, 64)
				total += f
			}
		}
	}
	return time.Duration(total * float64(time.Second)), nil
}

// commandTimes is the time redis-server spent in each command (INFO
// commandstats).
type commandTimes map[string]time.Duration

// redisCommands reads the time spent per command since the last CONFIG
// RESETSTAT.
func redisCommands(ctx context.Context, redis rueidis.Client) (commandTimes, error) {
	info, err := redis.Do(ctx, redis.B().Info().Section("commandstats").Build()).ToString()
	if err != nil {
		return nil, err
	}
	out := commandTimes{}
	for _, line := range strings.Split(info, "\r\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		for _, field := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(field, "usec="); ok {
				us, _ := strconv.ParseInt(v, 10, 64)
				out[name] = time.Duration(us) * time.Microsecond
			}
		}
	}
	return out, nil
}

// perDoc lists the commands that took the most, in µs per document.
func (c commandTimes) perDoc(n int) string {
	names := make([]string, 0, len(c))
	for name := range c {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return c[names[i]] > c[names[j]] })
	var parts []string
	for _, name := range names[:min(6, len(names))] {
		parts = append(parts, fmt.Sprintf("%s %.2f", name, float64(c[name].Microseconds())/float64(n)))
	}
	return strings.Join(parts, ", ")
}

// peakRSS reads VmHWM of a process, in bytes.
func peakRSS(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM")
}

// syncRate makes rows dirty states in Redis and times one sync pass of
// them to PostgreSQL.
func syncRate(ctx context.Context, redis rueidis.Client, dsn string, rows int) (int, time.Duration, error) {
	st, err := store.OpenPostgres(ctx, dsn, store.Options{})
	if err != nil {
		return 0, 0, err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return 0, 0, err
	}
	s := state.New(redis, state.Options{Pool: "bench-sync", Partition: 0})
	claim, err := s.Claim(ctx, 0, true)
	if err != nil {
		return 0, 0, err
	}
	for i := 0; i < rows; i += batch {
		updates := make([]state.Update, 0, batch)
		for j := i; j < min(i+batch, rows); j++ {
			updates = append(updates, state.Update{Emit: state.EmitNever, Doc: document.Document{
				URL: fmt.Sprintf("https://sync.example/%d", j), PubDate: uint64(j), FetchTime: uint64(j), Text: strings.Repeat("x", 150)}})
		}
		if _, err := s.Apply(ctx, claim.Epoch, updates, int64(i+batch), nil); err != nil {
			return 0, 0, err
		}
	}
	sy := &syncer.Syncer{State: s, Store: st, Pool: "bench-sync", Metrics: metrics.New(prometheus.NewRegistry()).Partition("bench-sync", 0),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	start := time.Now()
	n, err := sy.Pass(ctx, claim.Epoch)
	return n, time.Since(start), err
}

// freshSchema creates a schema for this run and returns a DSN using it.
func freshSchema(dsn string) (string, func(), error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return "", nil, err
	}
	schema := fmt.Sprintf("docexec_bench_%x", rand.Uint32())
	if _, err := db.Exec(`CREATE SCHEMA ` + schema); err != nil {
		db.Close()
		return "", nil, err
	}
	u, err := url.Parse(dsn)
	if err != nil {
		db.Close()
		return "", nil, err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), func() { db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); db.Close() }, nil
}
