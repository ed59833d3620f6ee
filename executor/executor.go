// Package executor is the `docexec executor` command: it loads the
// configuration, connects to Redis, PostgreSQL and Kafka (waiting out any
// of them being away), runs one partition of a pool (see package
// partition), elected by its Lease when the configuration names one, and
// exposes /healthz, /readyz and Prometheus /metrics. The packages below it
// are the partition's parts, which `docexec local` runs too.
package executor

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync/atomic"
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

	"github.com/docexec/docexec/executor/config"
	"github.com/docexec/docexec/executor/health"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/leader"
	"github.com/docexec/docexec/executor/metrics"
	"github.com/docexec/docexec/executor/partition"
	"github.com/docexec/docexec/executor/pipeline"
	"github.com/docexec/docexec/executor/store"
	"github.com/docexec/docexec/internal/cli"
	"github.com/docexec/docexec/internal/memlimit"
	"github.com/docexec/docexec/internal/redact"
)

// errConfig marks an error that only a change of configuration (or of the
// Kafka topics it names) can fix: the process exits cli.ExitUsage. Every
// other error is waited out.
var errConfig = errors.New("configuration error")

// Main runs the executor with args (flags) until ctx ends, and returns the
// process exit code.
func Main(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := config.Load(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stderr, "usage: docexec executor [--config FILE] [flags]\n\nEvery flag also reads DOCEXEC_<FLAG> from the environment (kafka.inputTopic: DOCEXEC_KAFKA_INPUT_TOPIC).")
		fs := config.FlagSet(&cfg)
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		return cli.ExitUsage
	}
	if err != nil {
		return cli.Usage(stderr, "executor", fmt.Errorf("invalid configuration: %w", err))
	}
	log := cli.NewLogger(stderr, cfg.LogFormat, cfg.Secrets()...)
	klog.SetSlogLogger(log) // client-go's election logs, in the same format
	log.Info("Go heap's soft memory limit", "limit", memlimit.Set())
	err = run(ctx, cfg, log)
	switch {
	case errors.Is(err, errConfig):
		log.Error("Executor stopped: invalid configuration", "err", err)
		return cli.ExitUsage
	case err != nil:
		log.Error("Executor stopped", "err", err)
		return cli.ExitFailed
	}
	return cli.ExitOK
}

// run serves HTTP at once, then connects to Redis, PostgreSQL and Kafka —
// waiting out any of them being away, unready meanwhile with the reason —
// and runs the partition until ctx ends.
func run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := health.New(log)
	var ready readiness
	ready.set(func() []string { return append(h.Problems(), "connecting to Redis, PostgreSQL and Kafka") })
	g, gctx := errgroup.WithContext(ctx)
	secrets := redact.New(cfg.Secrets()...)
	problems := func() []string { // errors of libraries may quote what they were given
		p := ready.problems()
		for i := range p {
			p[i] = secrets.String(p[i])
		}
		return p
	}
	srv := &http.Server{Addr: cfg.Listen, Handler: Handler(reg, problems, cfg.Pprof), ReadHeaderTimeout: 5 * time.Second}
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
		return serve(gctx, cfg, log, reg, h, &ready)
	})
	log.Info("Executor started", "pool", cfg.Identity(), "partition", cfg.Partition, "listen", cfg.Listen)
	return g.Wait()
}

// serve connects and runs the partition until ctx ends.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger, reg *prometheus.Registry, h *health.Health, ready *readiness) error {
	conns, err := connect(ctx, cfg, h)
	if err != nil || conns == nil {
		return err // a configuration error, or stopped while connecting
	}
	defer conns.close()
	exec, err := partition.NewEngine(cfg, conns.redis, pipeline.Deps{
		Kafka: conns.kafka, Store: conns.store, Log: log, Health: h,
		// The pool's name: its namespace is the scraped pod's.
		Metrics: metrics.New(reg).Partition(cfg.Pool, cfg.Partition),
	})
	if err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	elector, err := newElector(cfg, log)
	if err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	ready.set(func() []string {
		if problems := h.Problems(); len(problems) > 0 {
			return problems
		}
		if exec.Ready() {
			return nil
		}
		if elector == nil {
			return []string{"not processing the partition yet"}
		}
		// A standby is ready when it could lead at once: it reaches Redis
		// and PostgreSQL.
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var problems []string
		if err := conns.redis.Do(ctx, conns.redis.B().Ping().Build()).Error(); err != nil {
			problems = append(problems, "redis: "+err.Error())
		}
		if err := conns.store.Ping(ctx); err != nil {
			problems = append(problems, "postgres: "+err.Error())
		}
		return problems
	})
	return partition.Lead(ctx, exec, elector, time.Duration(cfg.Leader.RetryPeriod), log, h)
}

// topologyGrace is how long topics may look unfit at start before the
// executor takes it for a configuration error.
const topologyGrace = 10 * time.Second

// connections are the executor's clients; their owner closes them.
type connections struct {
	redis rueidis.Client
	store *store.Store
	kafka *kafka.Client
}

func (c *connections) close() {
	if c.kafka != nil {
		c.kafka.Close()
	}
	if c.store != nil {
		c.store.Close()
	}
	if c.redis != nil {
		c.redis.Close()
	}
}

// connect opens Redis, PostgreSQL (migrating its schema) and Kafka
// (checking the topics), each retried with a capped backoff until it works:
// a server may be away for minutes. It returns nil connections when ctx
// ends first, and an errConfig error when the topics cannot serve the
// partition.
func connect(ctx context.Context, cfg config.Config, h *health.Health) (*connections, error) {
	c := &connections{}
	steps := []struct {
		component string
		open      func(context.Context) error
	}{
		{"redis", func(context.Context) (err error) {
			c.redis, err = rueidis.NewClient(partition.RedisOptions(cfg.Redis))
			return err
		}},
		{"postgres", func(ctx context.Context) error {
			st, err := store.OpenPostgres(ctx, cfg.Postgres.DSN, partition.StoreOptions(cfg))
			if err == nil {
				if err = st.Migrate(ctx); err != nil {
					st.Close()
					return err
				}
				c.store = st
			}
			return err
		}},
		{"kafka", func(context.Context) error {
			client, err := kafka.Connect(cfg.Kafka.Config)
			if err == nil {
				if err = client.CheckTopics(cfg.Kafka.InputTopic, cfg.Kafka.OutputTopic, cfg.Kafka.DeadLetterTopic, cfg.Partition); err != nil {
					client.Close()
					return err
				}
				c.kafka = client
			}
			return err
		}},
	}
	for _, step := range steps {
		backoff := health.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}
		var unfitSince time.Time
		for {
			err := step.open(ctx)
			if err == nil {
				h.Set(step.component, nil)
				break
			}
			// Unfit topics are a configuration error once they stay so: a
			// broker may not know a topic created a moment ago.
			if errors.Is(err, kafka.ErrTopology) {
				if unfitSince.IsZero() {
					unfitSince = time.Now()
				}
				if time.Since(unfitSince) >= topologyGrace {
					c.close()
					return nil, fmt.Errorf("%w: %w", errConfig, err)
				}
			}
			h.Set(step.component, err)
			select {
			case <-ctx.Done():
				c.close()
				return nil, nil
			case <-time.After(backoff.Next()):
			}
		}
	}
	return c, nil
}

// readiness holds what /readyz asks: the current reasons not to be ready.
type readiness struct {
	fn atomic.Pointer[func() []string]
}

func (r *readiness) set(fn func() []string) { r.fn.Store(&fn) }
func (r *readiness) problems() []string     { return (*r.fn.Load())() }

// newElector returns the partition's Lease election, or nil when the
// configuration names no Lease.
func newElector(cfg config.Config, log *slog.Logger) (leader.Elector, error) {
	if cfg.Leader.Lease == "" {
		return nil, nil
	}
	rest, err := kubeConfig()
	if err != nil {
		return nil, fmt.Errorf("leader election needs the Kubernetes API: %w", err)
	}
	// The client serves the election alone, with limits well above its
	// needs (a renewal every retry period): under client-go's default of 5
	// requests a second, renewals waited behind other requests past their
	// deadline, and busy leaders lost their Lease.
	perSecond := float32(time.Second) / float32(cfg.Leader.RetryPeriod)
	rest.QPS, rest.Burst = max(4*perSecond, 10), max(int(8*perSecond), 20)
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
		RetryPeriod: time.Duration(cfg.Leader.RetryPeriod), Log: log,
	}, nil
}

// kubeConfig is the pod's service account in a cluster, else KUBECONFIG.
func kubeConfig() (*rest.Config, error) {
	if c, err := rest.InClusterConfig(); err == nil {
		return c, nil
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{}).ClientConfig()
}

// Handler serves /healthz (the process runs), /readyz (ready when
// problems returns none; else 503 listing them), /metrics and, with
// profiles, /debug/pprof/.
func Handler(reg *prometheus.Registry, problems func() []string, profiles bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if p := problems(); len(p) > 0 {
			http.Error(w, "not ready: "+strings.Join(p, "; "), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if profiles {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
