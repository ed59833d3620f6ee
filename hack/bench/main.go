// Command bench measures the executor's throughput against its baselines on
// the same machine and servers, in one run, and prints tables and the
// targets beside what was measured:
//
//	(a) raw passthrough: sarama reads the input and republishes every
//	    message, one transaction per batch, no decoding and no state, in a
//	    process of its own (this binary, run as `bench passthrough`);
//	(b) the executor: the real `docexec executor` binary, real Redis and
//	    PostgreSQL, one process per partition;
//	(c) naive: one Redis read and one write per message, merge in Go, the
//	    same Kafka output as (a);
//
// then executors of 4 and 16 partitions on one Redis and of 16 on a Redis
// Cluster of three masters, the sync against a raw batched upsert, and
// realistic documents with each compression codec. Each (a)/(b) pair and
// the sync comparison run -runs times (in turn, so that the shared box's
// moods fall on both sides alike); tables show the run of the median ratio
// and the targets the range. Kafka is kfake in this process. `make bench`
// builds the binary and starts the servers:
//
//	hack/with-services.sh go run ./hack/bench -docexec bin/docexec
package main

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/internal/testenv"
)

const batch = 500

var (
	executorFlags  string
	profileDir     string
	codecs         []string // of the realistic table
	runs           int      // of each comparison
	profileSeconds int
)

// servers are what executors connect to.
type servers struct {
	binary string
	redis  []string
	dsn    string
	// env is added to the executors' environment.
	env []string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "passthrough" {
		if err := passthroughMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench passthrough:", err)
			os.Exit(1)
		}
		return
	}
	messages := flag.Int("messages", 200_000, "input messages")
	urls := flag.Int("urls", 20_000, "distinct urls in the input")
	syncRows := flag.Int("sync-rows", 100_000, "states synced in the sync measurement")
	webBytes := flag.Int64("web-bytes", 400_000_000, "bytes of realistic documents (web-like texts, median ~6 KB) in the realistic table; 0 skips it")
	partitions := flag.Bool("partitions", true, "measure 4 and 16 partitions on one Redis and 16 on a Redis Cluster")
	binary := flag.String("docexec", "bin/docexec", "the docexec binary to measure as (b)")
	flag.StringVar(&executorFlags, "executor-flags", "", "extra flags for (b), space-separated")
	flag.StringVar(&profileDir, "pprof", "", "directory to write CPU profiles of (a) and of one-partition (b) runs to")
	flag.IntVar(&runs, "runs", 3, "runs of each (a)/(b) pair and of the sync comparison; tables show the run of the median ratio, targets the range")
	codecList := flag.String("codecs", "none,lz4,zstd", "Kafka compression codecs of the realistic table, comma-separated")
	flag.IntVar(&profileSeconds, "pprof-seconds", 10, "length of each executor profile (cover the run; idle time adds no samples)")
	flag.Parse()
	codecs = strings.Split(*codecList, ",")
	if runs < 1 {
		fmt.Fprintln(os.Stderr, "bench: -runs must be at least 1")
		os.Exit(2)
	}
	if err := run(*messages, *urls, *syncRows, *webBytes, *partitions, *binary); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// target is one line of the last table.
type target struct {
	name, goal, measured string
	met                  bool
}

func run(n, urls, syncRows int, webBytes int64, partitions bool, binary string) error {
	ctx := context.Background()
	started := time.Now()
	stolenBefore, err := stealTicks()
	if err != nil {
		return err
	}
	redisAddr, pgDSN := os.Getenv("DOCEXEC_TEST_REDIS"), os.Getenv("DOCEXEC_TEST_POSTGRES")
	if redisAddr == "" || pgDSN == "" {
		return errors.New("DOCEXEC_TEST_REDIS and DOCEXEC_TEST_POSTGRES must be set: run `make bench`")
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
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
	redis, err := connectRedis([]string{redisAddr})
	if err != nil {
		return err
	}
	defer redis.client.Close()
	if err := redis.client.Do(ctx, redis.client.B().Flushall().Build()).Error(); err != nil {
		return err
	}
	dsn, dropSchema, err := freshSchema(pgDSN)
	if err != nil {
		return err
	}
	defer dropSchema()
	s := servers{binary: binary, redis: redis.addrs, dsn: dsn}
	var targets []target
	check := func(name, goal, measured string, met bool) {
		targets = append(targets, target{name, goal, measured, met})
	}

	fmt.Fprintf(os.Stderr, "producing %d messages over %d urls...\n", n, urls)
	small, err := produce(cfg, client, "bench-in", 1, n, urls)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "measuring (a) and (b), %d runs...\n", runs)
	pairs, err := measurePairs(func(i int) (pair, error) {
		return runPair(ctx, s, redis, cfg, client, small, fmt.Sprintf("a%d", i), fmt.Sprintf("bench-b%d", i), fmt.Sprintf("documents_b%d", i))
	})
	if err != nil {
		return err
	}
	median := pairs[len(pairs)/2]
	aProcess, aCPU, b := median.aProcess, median.aCPU, median.b
	var c time.Duration
	redisBefore, err := redis.cpu(ctx)
	if err != nil {
		return err
	}
	cCPU, err := machineCPU(func() (err error) { c, err = naive(ctx, cfg, client, redis.client, small); return err })
	if err != nil {
		return fmt.Errorf("(c): %w", err)
	}
	redisAfter, err := redis.cpu(ctx)
	if err != nil {
		return err
	}

	perDoc := func(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }
	// Rates and costs count the messages, duplicates included, as (b)'s do.
	msgs := small.n
	aRate, cRate := median.aRate(), float64(msgs)/c.Seconds()
	fmt.Printf("%d messages of ~%d bytes (%d updates, about one in five sent twice), %d urls, batches of %d, one partition\n\n", msgs, messageSize, n, urls, batch)
	fmt.Printf("| measurement | docs/s | machine CPU µs/doc | process CPU µs/doc | redis-server µs/doc |\n|---|---:|---:|---:|---:|\n")
	fmt.Printf("| (a) raw sarama passthrough, own process | %.0f | %.1f | %.1f | - |\n", aRate, perDoc(aCPU, msgs), perDoc(aProcess, msgs))
	fmt.Printf("| (b) docexec executor, real Redis + PostgreSQL | %.0f | %.1f | %.1f | %.2f |\n", b.docsPerSec, b.machineUS, b.processUS, b.redisUS)
	fmt.Printf("| (c) naive per-message Redis read + write, in the bench process | %.0f | %.1f | - | %.2f |\n", cRate, perDoc(cCPU, msgs), perDoc(redisAfter-redisBefore, msgs))
	fmt.Printf("\n(b) redis-server µs/doc by command (Redis's own count): %s\n", b.commands)
	fmt.Printf("(b) where its time went, from its metrics: %s\n", b.timings)
	if len(pairs) > 1 {
		fmt.Printf("\n(the run of the median (b)/(a) of %d; (b)/(a) over all: %s)\n", len(pairs), spread("%.2f", pairs, pair.ratio))
	}
	redisUS := func(p pair) float64 { return p.b.redisUS }
	check("redis-server CPU per document, (b), µs", "≤ 1.5", spread("%.2f", pairs, redisUS), medianOf(pairs, redisUS) <= 1.5)
	check("(b)/(a) docs/s", "≥ 0.7", spread("%.2f", pairs, pair.ratio), median.ratio() >= 0.7)
	cpuRatio := func(p pair) float64 { return p.b.processUS / perDoc(p.aProcess, msgs) }
	check("executor process CPU / passthrough process CPU, per document", "≤ 2", spread("%.2f", pairs, cpuRatio), medianOf(pairs, cpuRatio) <= 2)
	check("(b)/(c) docs/s", "≥ 5", fmt.Sprintf("%.1f", b.docsPerSec/cRate), b.docsPerSec/cRate >= 5)

	fmt.Fprintf(os.Stderr, "measuring the sync, %d runs...\n", runs)
	var syncs []syncRun
	for i := range runs {
		r, err := compareSync(ctx, redis.client, dsn, syncRows, i)
		if err != nil {
			return err
		}
		syncs = append(syncs, r)
	}
	slices.SortFunc(syncs, func(x, y syncRun) int { return cmp.Compare(x.ratio(), y.ratio()) })
	ms := syncs[len(syncs)/2]
	fmt.Printf("\n| sync | value |\n|---|---:|\n")
	fmt.Printf("| sync pass Redis → PostgreSQL (%d dirty states) | %.0f rows/s |\n", syncRows, ms.syncPerSec)
	fmt.Printf("| raw batched upsert (pgx, %d rows per INSERT ... ON CONFLICT, one transaction each) | %.0f rows/s |\n", 1000, ms.rawPerSec)
	fmt.Printf("| largest lag of PostgreSQL's watermark behind Redis's applied offset during (b), sync.interval 1 s | %.0f ms |\n", float64(b.lag.Milliseconds()))
	check("sync rows/s / raw batched upsert rows/s", "≥ 0.8", spread("%.2f", syncs, syncRun.ratio), ms.ratio() >= 0.8)
	check("watermark lag during (b)", "≤ 2 sync intervals (2 s)", b.lag.Round(time.Millisecond).String(), b.lag <= 2*time.Second)

	if partitions {
		if err := scaling(ctx, s, redis, cfg, client, n, urls, b, check); err != nil {
			return err
		}
	}
	if webBytes > 0 {
		if err := realistic(ctx, s, redis, cfg, client, webBytes, check); err != nil {
			return err
		}
	}

	fmt.Printf("\n| target | goal | measured | |\n|---|---|---:|---|\n")
	for _, t := range targets {
		verdict := "missed"
		if t.met {
			verdict = "met"
		}
		fmt.Printf("| %s | %s | %s | %s |\n", t.name, t.goal, t.measured, verdict)
	}
	stolenAfter, err := stealTicks()
	if err != nil {
		return err
	}
	// Another machine on the same host takes cores from this one now and
	// then: the share says how much the runs were disturbed that way.
	stolen := time.Duration(stolenAfter-stolenBefore) * 10 * time.Millisecond
	fmt.Printf("\nshared box: %d cores; the host took %.1f%% of their time during the bench (steal)\n", runtime.NumCPU(),
		100*stolen.Seconds()/(time.Since(started).Seconds()*float64(runtime.NumCPU())))
	return nil
}

// scaling runs the workload over 4 and 16 partitions, one executor process
// each, on one Redis, then 16 on a Redis Cluster of three masters.
func scaling(ctx context.Context, s servers, redis redisServers, cfg kafka.Config, client *kafka.Client, n, urls int, one executorResult, check func(string, string, string, bool)) error {
	fmt.Printf("\n| executors (one per partition) | Redis | docs/s | machine CPU µs/doc | CPU busy | redis-server µs/doc | redis-server share of a core | peak RSS per executor (all / anonymous) |\n|---:|---|---:|---:|---:|---:|---:|---:|\n")
	row := func(p int, where string, r executorResult) {
		fmt.Printf("| %d | %s | %.0f | %.1f | %.0f%% | %.2f | %.0f%% | %.0f / %.0f MiB |\n", p, where, r.docsPerSec, r.machineUS, 100*r.busy, r.redisUS, 100*r.redisBusy, float64(r.rss)/(1<<20), float64(r.anon)/(1<<20))
	}
	row(1, "one server", one)
	var last executorResult
	var w workload // the last one, 16 partitions, run again on the cluster
	for _, p := range []int32{4, 16} {
		fmt.Fprintf(os.Stderr, "measuring %d partitions...\n", p)
		var err error
		w, err = produce(cfg, client, fmt.Sprintf("bench-in-%d", p), p, n, urls)
		if err != nil {
			return err
		}
		// Each run stores its states in a table of its own: one that held
		// them already would make most updates change nothing.
		if last, err = runExecutors(ctx, s, redis, cfg, client, w, fmt.Sprintf("bench-p%d", p), "--postgres.table", fmt.Sprintf("documents_p%d", p)); err != nil {
			return fmt.Errorf("%d partitions: %w", p, err)
		}
		row(int(p), "one server", last)
	}
	dir, err := os.MkdirTemp("", "bench-redis-cluster")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rc, err := testenv.StartRedisCluster(dir)
	if rc != nil {
		defer rc.Stop()
	}
	if err != nil {
		return err
	}
	clustered, err := connectRedis(rc.Seeds())
	if err != nil {
		return err
	}
	defer clustered.client.Close()
	fmt.Fprintf(os.Stderr, "measuring 16 partitions on a Redis Cluster...\n")
	onCluster, err := runExecutors(ctx, servers{binary: s.binary, redis: clustered.addrs, dsn: s.dsn}, clustered, cfg, client,
		w, "bench-cluster", "--postgres.table", "documents_cluster")
	if err != nil {
		return fmt.Errorf("16 partitions on a Redis Cluster: %w", err)
	}
	row(16, "cluster of 3 masters", onCluster)
	check("16 partitions on one Redis: bound by the cores, not Redis", "cores ≥ 90% busy, redis-server < 50% of a core",
		fmt.Sprintf("%.0f%%, %.0f%%", 100*last.busy, 100*last.redisBusy), last.busy >= 0.9 && last.redisBusy < 0.5)
	return nil
}

// realistic measures (a) and (b) on web-like documents, with compression
// off and with each codec, and prints its table.
func realistic(ctx context.Context, s servers, redis redisServers, cfg kafka.Config, client *kafka.Client, bytes int64, check func(string, string, string, bool)) error {
	fmt.Fprintf(os.Stderr, "producing %d MB of realistic documents...\n", bytes/1e6)
	w, err := produceWeb(cfg, client, "bench-web-in", bytes)
	if err != nil {
		return err
	}
	fmt.Printf("\n%d realistic documents, %.1f MB (texts log-normal, median ~6 KB, up to ~1 MB, every script; urls up to 8 KB), one partition; (b) as in a pod limited to 100 MiB (GOMEMLIMIT=90MiB, as it sets itself there)\n\n",
		w.n, float64(w.bytes)/1e6)
	fmt.Printf("| measurement | compression | docs/s | MB/s | machine CPU µs/doc | process CPU µs/doc | redis-server µs/doc | CPU busy | peak RSS (all / anonymous) | watermark lag |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	mb := float64(w.bytes) / 1e6 / float64(w.n) // per document
	var rss, anon int64
	var timings []string
	for _, compression := range codecs {
		c := cfg
		c.Compression = compression
		fmt.Fprintf(os.Stderr, "measuring realistic documents, %s, %d runs...\n", compression, runs)
		// A table of its own for each run: each stores every state anew.
		// The executor runs as in a pod limited to 100 MiB: it gives its
		// heap 90% of that (internal/memlimit).
		limited := s
		limited.env = []string{"GOMEMLIMIT=90MiB"}
		pairs, err := measurePairs(func(i int) (pair, error) {
			return runPair(ctx, limited, redis, c, client, w, fmt.Sprintf("web-a-%s-%d", compression, i), fmt.Sprintf("bench-web-%s-%d", compression, i),
				fmt.Sprintf("web_%s_%d", compression, i))
		})
		if err != nil {
			return fmt.Errorf("%s: %w", compression, err)
		}
		median := pairs[len(pairs)/2]
		aProcess, aCPU, b := median.aProcess, median.aCPU, median.b
		aRate := median.aRate()
		fmt.Printf("| (a) raw sarama passthrough | %s | %.0f | %.1f | %.0f | %.0f | - | - | - | - |\n", compression, aRate, aRate*mb,
			float64(aCPU.Microseconds())/float64(w.n), float64(aProcess.Microseconds())/float64(w.n))
		fmt.Printf("| (b) docexec executor | %s | %.0f | %.1f | %.0f | %.0f | %.1f | %.0f%% | %.0f / %.0f MiB | %s |\n", compression, b.docsPerSec, b.docsPerSec*mb,
			b.machineUS, b.processUS, b.redisUS, 100*b.busy, float64(b.rss)/(1<<20), float64(b.anon)/(1<<20), b.lag.Round(time.Millisecond))
		if compression != "none" {
			check("realistic (b)/(a) MB/s, "+compression, "≥ 0.7", spread("%.2f", pairs, pair.ratio), median.ratio() >= 0.7)
		}
		for _, p := range pairs {
			rss, anon = max(rss, p.b.rss), max(anon, p.b.anon)
		}
		timings = append(timings, fmt.Sprintf("(b) %s: %s", compression, b.timings))
	}
	fmt.Printf("\n%s\n", strings.Join(timings, "\n"))
	check("executor peak RSS, realistic documents (all / anonymous)", "≤ 100 MiB", fmt.Sprintf("%.0f / %.0f MiB", float64(rss)/(1<<20), float64(anon)/(1<<20)), rss <= 100<<20)
	return nil
}

// pair is one run of (a) and (b) on the same input of n documents.
type pair struct {
	n                 int
	a, aProcess, aCPU time.Duration // (a)'s time between 10% and 90% committed, its process's CPU, the machine's
	b                 executorResult
}

// aRate is (a)'s docs/s: the 80% of the input between its 10% and 90% marks.
func (p pair) aRate() float64 { return 0.8 * float64(p.n) / p.a.Seconds() }

// ratio is (b)'s docs/s over (a)'s.
func (p pair) ratio() float64 { return p.b.docsPerSec / p.aRate() }

// runPair runs (a), publishing to out-<aOut>, then (b) as pool with its
// own PostgreSQL table. Afterwards it empties Redis and drops the table, so
// that each run starts as the first did (and PostgreSQL's autovacuum of
// one run's table does not fall on the next).
func runPair(ctx context.Context, s servers, redis redisServers, cfg kafka.Config, client *kafka.Client, w workload, aOut, pool, table string) (pair, error) {
	p := pair{n: w.n}
	// Kafka is in this process: its heap is collected before each side
	// runs, so that neither pays for the garbage of what ran before.
	runtime.GC()
	var err error
	p.aCPU, err = machineCPU(func() (err error) { p.a, p.aProcess, err = passthroughProcess(ctx, cfg, w, "out-"+aOut); return err })
	if err != nil {
		return p, fmt.Errorf("(a): %w", err)
	}
	runtime.GC()
	if p.b, err = runExecutors(ctx, s, redis, cfg, client, w, pool, "--postgres.table", table); err != nil {
		return p, fmt.Errorf("(b): %w", err)
	}
	if err := redis.client.Do(ctx, redis.client.B().Flushall().Build()).Error(); err != nil {
		return p, err
	}
	db, err := sql.Open("pgx", s.dsn)
	if err != nil {
		return p, err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, `DROP TABLE `+table+` CASCADE`) // and its readable views
	return p, err
}

// measurePairs runs measure runs times, (a) and (b) in turn so that the
// box's moods fall on both alike, and returns the pairs by (b)/(a): the
// middle one is the median.
func measurePairs(measure func(i int) (pair, error)) ([]pair, error) {
	var pairs []pair
	for i := range runs {
		p, err := measure(i)
		if err != nil {
			return nil, err
		}
		pairs = append(pairs, p)
	}
	slices.SortFunc(pairs, func(x, y pair) int { return cmp.Compare(x.ratio(), y.ratio()) })
	return pairs, nil
}

// medianOf is the median of f over xs.
func medianOf[T any](xs []T, f func(T) float64) float64 {
	values := make([]float64, len(xs))
	for i, x := range xs {
		values[i] = f(x)
	}
	slices.Sort(values)
	return values[len(values)/2]
}

// spread writes the median of f over xs and, with more than one, their
// range: "0.66 (0.60-0.68 over 3 runs)".
func spread[T any](format string, xs []T, f func(T) float64) string {
	out := fmt.Sprintf(format, medianOf(xs, f))
	if len(xs) > 1 {
		lo, hi := f(xs[0]), f(xs[0])
		for _, x := range xs[1:] {
			lo, hi = min(lo, f(x)), max(hi, f(x))
		}
		out += fmt.Sprintf(" ("+format+"-"+format+" over %d runs)", lo, hi, len(xs))
	}
	return out
}
