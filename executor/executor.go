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
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/config"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/leader"
	"github.com/docexec/docexec/executor/metrics"
	"github.com/docexec/docexec/executor/pipeline"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/executor/store"
	"github.com/docexec/docexec/internal/redact"
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
	log := NewLogger(stderr, cfg.LogFormat, cfg.Secrets()...)
	klog.SetSlogLogger(log) // client-go's election logs, in the same format
	if err := run(ctx, cfg, log); err != nil {
		log.Error("Executor stopped", "err", err)
		return ExitFailed
	}
	return ExitOK
}

// NewLogger returns the structured logger of a log format, which masks
// secrets wherever they appear (errors of libraries quote what they were
// given).
func NewLogger(w io.Writer, format string, secrets ...string) *slog.Logger {
	var h slog.Handler = slog.NewJSONHandler(w, nil)
	if format == "text" {
		h = slog.NewTextHandler(w, nil)
	}
	return slog.New(redact.New(secrets...).Handler(h))
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

	elector, err := newElector(cfg, exec, log)
	if err != nil {
		return err
	}
	// With an election, a standby is ready when it could lead at once: it
	// reaches Redis and PostgreSQL.
	ready := exec.Ready
	if elector != nil {
		ready = func() bool {
			if exec.Ready() {
				return true
			}
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			return redis.Do(ctx, redis.B().Ping().Build()).Error() == nil && st.Ping(ctx) == nil
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	srv := &http.Server{Addr: cfg.Listen, Handler: Handler(reg, ready), ReadHeaderTimeout: 5 * time.Second}
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
		return Lead(gctx, exec, elector, time.Duration(cfg.Leader.RetryPeriod), log)
	})
	log.Info("Executor started", "pool", cfg.Pool, "partition", cfg.Partition, "listen", cfg.Listen)
	return g.Wait()
}

// newElector returns the partition's Lease election, or nil when the
// configuration names no Lease.
func newElector(cfg config.Config, exec *pipeline.Executor, log *slog.Logger) (leader.Elector, error) {
	if cfg.Leader.Lease == "" {
		return nil, nil
	}
	rest, err := kubeConfig()
	if err != nil {
		return nil, fmt.Errorf("leader election needs the Kubernetes API: %w", err)
	}
	client, err := kubernetes.NewForConfig(rest)
	if err != nil {
		return nil, fmt.Errorf("leader election: %w", err)
	}
	identity := cfg.Leader.Identity
	if identity == "" {
		if identity, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("leader election: no leader.identity and no host name: %w", err)
		}
	}
	return &leader.Lease{
		Client: client, Namespace: cfg.Leader.Namespace, Name: cfg.Leader.Lease, Identity: identity,
		LeaseDuration: time.Duration(cfg.Leader.LeaseDuration), RenewDeadline: time.Duration(cfg.Leader.RenewDeadline),
		RetryPeriod: time.Duration(cfg.Leader.RetryPeriod), Lag: exec.Lag, Log: log,
	}, nil
}

// kubeConfig is the pod's service account in a cluster, else KUBECONFIG.
func kubeConfig() (*rest.Config, error) {
	if c, err := rest.InClusterConfig(); err == nil {
		return c, nil
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{}).ClientConfig()
}

// Lead runs the partition: at once without an elector, else in terms of
// leadership, standing by in between. A leader fenced by a newer one (or
// that lost its Lease) stands by again; SIGTERM (ctx) ends it after the
// current term's graceful stop.
func Lead(ctx context.Context, exec *pipeline.Executor, elector leader.Elector, pause time.Duration, log *slog.Logger) error {
	if elector == nil {
		return exec.Run(ctx)
	}
	for {
		led, err := elector.Lead(ctx, exec.Run)
		switch {
		case err != nil && pipeline.Fenced(err):
			log.Warn("Fenced by a newer leader; standing by", "err", err)
		case err != nil && errors.Is(err, leader.ErrLost) && !errors.Is(err, kafka.ErrPermanent):
			log.Warn("The term ended badly after its Lease was lost; standing by", "err", err)
		case err != nil:
			return err
		case ctx.Err() != nil:
			return nil
		case led:
			log.Info("Stepped down; standing by")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
	}
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
