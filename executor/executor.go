// Package executor is the `docexec executor` process: it serves one
// partition of a pool (see package pipeline) and exposes /healthz, /readyz
// and Prometheus /metrics.
package executor

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/rueidis"
	"golang.org/x/sync/errgroup"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/config"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/metrics"
	"github.com/docexec/docexec/executor/pipeline"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/executor/store"
)

// Exit codes of Main.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
)

// Main runs the executor with args (flags) until ctx ends, and returns the
// process exit code.
func Main(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := config.Load(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stderr, "usage: docexec executor [--config FILE] [flags]\n\nEvery flag also reads DOCEXEC_<FLAG> from the environment (kafka.inputTopic: DOCEXEC_KAFKA_INPUT_TOPIC).")
		fs := config.FlagSet(&cfg)
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		return ExitUsage
	}
	if err != nil {
		fmt.Fprintf(stderr, "docexec executor: invalid configuration: %v\n", err)
		return ExitUsage
	}
	log := NewLogger(stderr, cfg.LogFormat)
	if err := run(ctx, cfg, log); err != nil {
		log.Error("Executor stopped", "err", err)
		return ExitFailed
	}
	return ExitOK
}

// NewLogger returns the structured logger of a log format.
func NewLogger(w io.Writer, format string) *slog.Logger {
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}

func run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	redis, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: cfg.Redis.Addresses, Username: cfg.Redis.Username, Password: cfg.Redis.Password,
		DisableCache: true, // the executor is the only writer of its keys
	})
	if err != nil {
		return fmt.Errorf("connect to Redis %v: %w", cfg.Redis.Addresses, err)
	}
	defer redis.Close()
	st, err := store.OpenPostgres(ctx, cfg.Postgres.DSN, store.Options{Table: cfg.Postgres.Table, BatchSize: cfg.Sync.BatchSize})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	client, err := kafka.Connect(cfg.Kafka.Config)
	if err != nil {
		return err
	}
	defer client.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exec, err := NewPipeline(cfg, pipeline.Deps{
		KafkaConfig: cfg.Kafka.Config, Kafka: client, Store: st, Log: log,
		State:   state.New(redis, state.Options{Pool: cfg.Pool, Partition: cfg.Partition, CleanTTL: time.Duration(cfg.Redis.CleanTTL)}),
		Metrics: metrics.New(reg).Partition(cfg.Pool, cfg.Partition),
	})
	if err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	srv := &http.Server{Addr: cfg.Listen, Handler: Handler(reg, exec.Ready), ReadHeaderTimeout: 5 * time.Second}
	g.Go(func() error {
		if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve %s: %w", cfg.Listen, err)
		}
		return nil
	})
	g.Go(func() error {
		defer func() {
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 5*time.Second)
			defer cancel()
			srv.Shutdown(stopCtx) //nolint:errcheck // best effort on the way out
		}()
		return exec.Run(gctx)
	})
	log.Info("Executor started", "pool", cfg.Pool, "partition", cfg.Partition, "listen", cfg.Listen)
	return g.Wait()
}

// NewPipeline builds the partition's executor from the configuration.
func NewPipeline(cfg config.Config, deps pipeline.Deps) (*pipeline.Executor, error) {
	c, err := codec.New(cfg.Kafka.Format)
	if err != nil {
		return nil, err
	}
	deps.Codec = c
	return pipeline.New(pipeline.Options{
		Pool: cfg.Pool, Partition: cfg.Partition,
		InputTopic: cfg.Kafka.InputTopic, OutputTopic: cfg.Kafka.OutputTopic, DeadLetterTopic: cfg.Kafka.DeadLetterTopic,
		Group: cfg.Kafka.Group, StartOffset: cfg.Kafka.StartOffset,
		BatchSize: cfg.Batch.Size, BatchWait: time.Duration(cfg.Batch.MaxWait),
		SyncInterval: time.Duration(cfg.Sync.Interval), SyncBatch: cfg.Sync.BatchSize,
		ShutdownTimeout: time.Duration(cfg.ShutdownTimeout),
	}, deps), nil
}

// Handler serves /healthz (the process runs), /readyz (ready() says the
// partition is being processed) and /metrics.
func Handler(reg *prometheus.Registry, ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not processing the partition", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}
