// Package config reads the executor's configuration from a YAML file, the
// environment and flags, in rising order of precedence: every setting has a
// flag (--kafka.inputTopic) and an environment variable
// (DOCEXEC_KAFKA_INPUT_TOPIC), so secrets can come from the environment and
// the rest from a ConfigMap.
package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"sigs.k8s.io/yaml"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/pipeline"
	"github.com/docexec/docexec/executor/store"
	"github.com/docexec/docexec/executor/syncer"
	"github.com/docexec/docexec/internal/redact"
)

// Config is everything an executor needs to run one partition.
type Config struct {
	// Pool names the pool; with PoolNamespace it is the pool's identity
	// (Identity), which scopes Redis keys, the consumer group, the
	// transactional id and the PostgreSQL watermark.
	Pool string `json:"pool"`
	// PoolNamespace is the pool's Kubernetes namespace, which the operator
	// sets: pools of one name in two namespaces sharing servers never meet.
	PoolNamespace string `json:"poolNamespace,omitempty"`
	// Partition is the input partition this executor serves.
	Partition int32    `json:"partition"`
	Kafka     Kafka    `json:"kafka"`
	Redis     Redis    `json:"redis"`
	Postgres  Postgres `json:"postgres"`
	Batch     Batch    `json:"batch"`
	Sync      Sync     `json:"sync"`
	Leader    Leader   `json:"leader"`
	// ShutdownTimeout bounds the last batch, publish and sync on SIGTERM.
	ShutdownTimeout Duration `json:"shutdownTimeout"`
	// Listen is the address of /healthz, /readyz and /metrics.
	Listen string `json:"listen"`
	// LogFormat is "json" or "text".
	LogFormat string `json:"logFormat"`
	// Pprof serves Go's profiles under /debug/pprof/ on Listen: where the
	// executor spends CPU and memory, for whoever can reach that port.
	Pprof bool `json:"pprof"`
}

// Kafka configures the topics and the brokers.
type Kafka struct {
	kafka.Config
	InputTopic      string `json:"inputTopic"`
	OutputTopic     string `json:"outputTopic"`
	DeadLetterTopic string `json:"deadLetterTopic"`
	// Group is the consumer group committed to; default "docexec-<pool>".
	Group string `json:"group"`
	// Format is the wire format of input and output: json or protobuf.
	Format string `json:"format"`
	// StartOffset is where a partition that never ran starts: earliest or
	// latest.
	StartOffset kafka.StartOffset `json:"startOffset"`
}

// Redis configures the state cache.
type Redis struct {
	// Addresses are host:port of a server, or seeds of a cluster.
	Addresses []string `json:"addresses"`
	Username  string   `json:"username"`
	Password  string   `json:"password"`
	// CleanTTL lets synced states expire; 0 keeps them.
	CleanTTL Duration `json:"cleanTTL"`
}

// Postgres configures the durable copy.
type Postgres struct {
	// DSN is a postgres:// URL or key=value string; best from the
	// environment (DOCEXEC_POSTGRES_DSN).
	DSN   string `json:"dsn"`
	Table string `json:"table"`
}

// Batch bounds a processing batch.
type Batch struct {
	Size     int      `json:"size"`
	MaxBytes int      `json:"maxBytes"`
	MaxWait  Duration `json:"maxWait"`
}

// Sync configures the sync to PostgreSQL.
type Sync struct {
	Interval  Duration `json:"interval"`
	BatchSize int      `json:"batchSize"`
}

// Leader configures the election among a partition's replicas.
type Leader struct {
	// Lease names the partition's coordination.k8s.io Lease; empty: no
	// election, this executor claims the partition at once.
	Lease string `json:"lease"`
	// Namespace of the Lease; the operator sets the pod's.
	Namespace string `json:"namespace"`
	// Identity names this executor in the Lease (the pod's name); default
	// the host name.
	Identity string `json:"identity"`
	// LeaseDuration, RenewDeadline and RetryPeriod: a standby takes over
	// LeaseDuration after the leader's last renewal.
	LeaseDuration Duration `json:"leaseDuration"`
	RenewDeadline Duration `json:"renewDeadline"`
	RetryPeriod   Duration `json:"retryPeriod"`
}

// The tightest election timings allowed (the CRD says the same): below
// them, a busy leader misses renewals and loses its Lease for nothing.
const (
	MinLeaseDuration = 2 * time.Second
	MinRenewDeadline = time.Second
	MinRetryPeriod   = 200 * time.Millisecond
)

// The default election timings (the CRD's defaults are the same, which a
// test of the operator checks).
const (
	DefaultLeaseDuration = 5 * time.Second
	DefaultRenewDeadline = 3 * time.Second
	DefaultRetryPeriod   = time.Second
)

// Default returns the configuration before file, environment and flags.
func Default() Config {
	return Config{
		Kafka:           Kafka{Config: kafka.Config{Compression: kafka.DefaultCompression}, Format: codec.FormatJSON, StartOffset: kafka.Earliest},
		Batch:           Batch{Size: pipeline.DefaultBatchSize, MaxBytes: pipeline.DefaultBatchBytes, MaxWait: Duration(pipeline.DefaultBatchWait)},
		Sync:            Sync{Interval: Duration(pipeline.DefaultSyncInterval), BatchSize: syncer.DefaultBatchSize},
		Leader:          Leader{LeaseDuration: Duration(DefaultLeaseDuration), RenewDeadline: Duration(DefaultRenewDeadline), RetryPeriod: Duration(DefaultRetryPeriod)},
		ShutdownTimeout: Duration(pipeline.DefaultShutdownTimeout),
		Listen:          ":8080",
		LogFormat:       "json",
	}
}

// Load builds the configuration from args (flags, including --config FILE)
// and the environment; the error names the offending setting.
func Load(args []string, env func(string) string) (Config, error) {
	// First find the file, then let the environment and flags override it.
	var file string
	pre := flag.NewFlagSet("executor", flag.ContinueOnError)
	pre.SetOutput(io.Discard)
	pre.StringVar(&file, "config", "", "")
	cfg := Default()
	bind(pre, &cfg)
	if err := pre.Parse(args); err != nil {
		return Config{}, err
	}
	if file == "" {
		file = env("DOCEXEC_CONFIG")
	}
	cfg = Default()
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		if err := yaml.UnmarshalStrict(raw, &cfg); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", file, err)
		}
	}
	fs := FlagSet(&cfg)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := env(EnvName(f.Name)); v != "" && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s (from %s): %w", f.Name, EnvName(f.Name), err)
			}
		}
	})
	if envErr != nil {
		return Config{}, envErr
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.Kafka.Group == "" {
		cfg.Kafka.Group = Group(cfg.Identity())
	}
	return cfg, cfg.Validate()
}

// Identity is what scopes the pool's state on shared servers.
func (c Config) Identity() string { return Identity(c.PoolNamespace, c.Pool) }

// Identity is the identity of pool in namespace: "<namespace>/<pool>", or
// the pool alone outside Kubernetes.
func Identity(namespace, pool string) string {
	if namespace == "" {
		return pool
	}
	return namespace + "/" + pool
}

// Group is the consumer group of a pool's executors unless configured.
func Group(identity string) string { return "docexec-" + identity }

// FlagSet returns the executor's flags, bound to cfg.
func FlagSet(cfg *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("executor", flag.ContinueOnError)
	fs.String("config", "", "YAML configuration file (env DOCEXEC_CONFIG)")
	bind(fs, cfg)
	return fs
}

func bind(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Pool, "pool", c.Pool, "pool name (with poolNamespace, scopes keys, group, transactional id)")
	fs.StringVar(&c.PoolNamespace, "poolNamespace", c.PoolNamespace, "the pool's namespace, set by the operator")
	fs.Var(int32Value{&c.Partition}, "partition", "input partition to serve")
	fs.Var(listValue{&c.Kafka.Brokers}, "kafka.brokers", "comma-separated Kafka brokers")
	fs.StringVar(&c.Kafka.Version, "kafka.version", c.Kafka.Version, "Kafka protocol version (default "+kafka.DefaultVersion+")")
	fs.StringVar(&c.Kafka.ClientID, "kafka.clientID", c.Kafka.ClientID, "Kafka client id")
	fs.BoolVar(&c.Kafka.TLS.Enabled, "kafka.tls.enabled", c.Kafka.TLS.Enabled, "connect to Kafka over TLS")
	fs.StringVar(&c.Kafka.TLS.CAFile, "kafka.tls.caFile", c.Kafka.TLS.CAFile, "PEM file of the CA that signed the brokers")
	fs.StringVar(&c.Kafka.TLS.CertFile, "kafka.tls.certFile", c.Kafka.TLS.CertFile, "PEM client certificate")
	fs.StringVar(&c.Kafka.TLS.KeyFile, "kafka.tls.keyFile", c.Kafka.TLS.KeyFile, "PEM client key")
	fs.StringVar(&c.Kafka.SASL.Mechanism, "kafka.sasl.mechanism", c.Kafka.SASL.Mechanism, "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or empty")
	fs.StringVar(&c.Kafka.SASL.Username, "kafka.sasl.username", c.Kafka.SASL.Username, "SASL user")
	fs.StringVar(&c.Kafka.SASL.Password, "kafka.sasl.password", c.Kafka.SASL.Password, "SASL password (prefer the environment)")
	fs.StringVar(&c.Kafka.InputTopic, "kafka.inputTopic", c.Kafka.InputTopic, "topic of document updates")
	fs.StringVar(&c.Kafka.OutputTopic, "kafka.outputTopic", c.Kafka.OutputTopic, "topic of changed states")
	fs.StringVar(&c.Kafka.DeadLetterTopic, "kafka.deadLetterTopic", c.Kafka.DeadLetterTopic, "topic of bad input")
	fs.StringVar(&c.Kafka.Group, "kafka.group", c.Kafka.Group, "consumer group (default docexec-<pool>)")
	fs.StringVar(&c.Kafka.Format, "kafka.format", c.Kafka.Format, "wire format: json or protobuf")
	fs.StringVar(&c.Kafka.Compression, "kafka.compression", c.Kafka.Compression, "compression of produced batches: none, gzip, snappy, lz4 or zstd")
	fs.Var((*startValue)(&c.Kafka.StartOffset), "kafka.startOffset", "where a new partition starts: earliest or latest")
	fs.Var(listValue{&c.Redis.Addresses}, "redis.addresses", "comma-separated Redis addresses (server or cluster seeds)")
	fs.StringVar(&c.Redis.Username, "redis.username", c.Redis.Username, "Redis ACL user")
	fs.StringVar(&c.Redis.Password, "redis.password", c.Redis.Password, "Redis password (prefer the environment)")
	fs.Var(&c.Redis.CleanTTL, "redis.cleanTTL", "how long synced states stay in Redis (0: forever)")
	fs.StringVar(&c.Postgres.DSN, "postgres.dsn", c.Postgres.DSN, "PostgreSQL DSN (prefer the environment)")
	fs.StringVar(&c.Postgres.Table, "postgres.table", c.Postgres.Table, "documents table (default documents)")
	fs.IntVar(&c.Batch.Size, "batch.size", c.Batch.Size, "messages per batch at most")
	fs.IntVar(&c.Batch.MaxBytes, "batch.maxBytes", c.Batch.MaxBytes, "bytes of message values that close a batch (at the message that reaches them)")
	fs.Var(&c.Batch.MaxWait, "batch.maxWait", "longest wait to fill a batch")
	fs.Var(&c.Sync.Interval, "sync.interval", "time between syncs to PostgreSQL")
	fs.IntVar(&c.Sync.BatchSize, "sync.batchSize", c.Sync.BatchSize, "states per PostgreSQL transaction")
	fs.StringVar(&c.Leader.Lease, "leader.lease", c.Leader.Lease, "Lease to elect the partition's leader with (empty: no election)")
	fs.StringVar(&c.Leader.Namespace, "leader.namespace", c.Leader.Namespace, "namespace of the Lease")
	fs.StringVar(&c.Leader.Identity, "leader.identity", c.Leader.Identity, "this executor's name in the Lease (default: host name)")
	fs.Var(&c.Leader.LeaseDuration, "leader.leaseDuration", "how long after the leader's last renewal a standby takes over")
	fs.Var(&c.Leader.RenewDeadline, "leader.renewDeadline", "how long the leader tries to renew before it steps down")
	fs.Var(&c.Leader.RetryPeriod, "leader.retryPeriod", "time between election attempts")
	fs.Var(&c.ShutdownTimeout, "shutdownTimeout", "bound on the last batch and sync after SIGTERM")
	fs.StringVar(&c.Listen, "listen", c.Listen, "address of /healthz, /readyz and /metrics")
	fs.StringVar(&c.LogFormat, "logFormat", c.LogFormat, "log format: json or text")
	fs.BoolVar(&c.Pprof, "pprof", c.Pprof, "serve Go's profiles under /debug/pprof/ on the listen address")
}

// Secrets returns every secret of the configuration, in every spelling
// that could reach a log (see package redact).
func (c Config) Secrets() []string {
	return append(redact.DSN(c.Postgres.DSN), c.Redis.Password, c.Kafka.SASL.Password)
}

// EnvName returns the environment variable of a flag: kafka.inputTopic is
// DOCEXEC_KAFKA_INPUT_TOPIC.
func EnvName(flagName string) string {
	var b strings.Builder
	b.WriteString("DOCEXEC_")
	prev := rune(0)
	for _, r := range flagName {
		switch {
		case r == '.':
			b.WriteByte('_')
		case unicode.IsUpper(r) && unicode.IsLower(prev):
			b.WriteByte('_')
			b.WriteRune(r)
		default:
			b.WriteRune(unicode.ToUpper(r))
		}
		prev = r
	}
	return b.String()
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, field, msg string) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s: %s", field, msg))
		}
	}
	check(c.Pool != "" && !strings.ContainsAny(c.Pool, "{}/"), "pool", "required, without braces or slashes")
	check(!strings.ContainsAny(c.PoolNamespace, "{}/"), "poolNamespace", "without braces or slashes")
	check(c.Partition >= 0, "partition", "must be 0 or more")
	if err := c.Kafka.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	check(c.Kafka.InputTopic != "", "kafka.inputTopic", "required")
	check(c.Kafka.OutputTopic != "", "kafka.outputTopic", "required")
	check(c.Kafka.DeadLetterTopic != "", "kafka.deadLetterTopic", "required")
	check(c.Kafka.InputTopic != c.Kafka.OutputTopic, "kafka.outputTopic", "must differ from kafka.inputTopic")
	check(c.Kafka.DeadLetterTopic != c.Kafka.InputTopic, "kafka.deadLetterTopic", "must differ from kafka.inputTopic")
	if _, err := codec.New(c.Kafka.Format); err != nil {
		errs = append(errs, fmt.Errorf("kafka.format: %w", err))
	}
	check(len(c.Redis.Addresses) > 0, "redis.addresses", "at least one address is required")
	// Redis expires keys in whole seconds: a shorter TTL would be none.
	check(c.Redis.CleanTTL == 0 || time.Duration(c.Redis.CleanTTL) >= time.Second, "redis.cleanTTL", "must be 0 (keep synced states) or at least 1s")
	check(c.Postgres.DSN != "", "postgres.dsn", "required (set DOCEXEC_POSTGRES_DSN)")
	if c.Postgres.DSN != "" {
		if err := store.CheckDSN(c.Postgres.DSN); err != nil {
			errs = append(errs, fmt.Errorf("postgres.dsn: %w", err))
		}
	}
	check(c.Batch.Size > 0, "batch.size", "must be positive")
	check(c.Batch.MaxBytes > 0, "batch.maxBytes", "must be positive")
	check(c.Batch.MaxWait > 0, "batch.maxWait", "must be positive")
	check(c.Sync.Interval > 0, "sync.interval", "must be positive")
	check(c.Sync.BatchSize > 0, "sync.batchSize", "must be positive")
	check(c.ShutdownTimeout > 0, "shutdownTimeout", "must be positive")
	if c.Leader.Lease != "" {
		check(c.Leader.Namespace != "", "leader.namespace", "required with leader.lease")
		check(c.Leader.RetryPeriod >= Duration(MinRetryPeriod), "leader.retryPeriod", "must be at least "+MinRetryPeriod.String())
		check(c.Leader.RenewDeadline >= Duration(MinRenewDeadline), "leader.renewDeadline", "must be at least "+MinRenewDeadline.String())
		check(c.Leader.LeaseDuration >= Duration(MinLeaseDuration), "leader.leaseDuration", "must be at least "+MinLeaseDuration.String())
		check(c.Leader.RenewDeadline > c.Leader.RetryPeriod, "leader.renewDeadline", "must be longer than leader.retryPeriod")
		check(c.Leader.LeaseDuration > c.Leader.RenewDeadline, "leader.leaseDuration", "must be longer than leader.renewDeadline")
	}
	check(c.LogFormat == "json" || c.LogFormat == "text", "logFormat", "json or text")
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// Duration is a time.Duration written as "1s" in YAML and flags.
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

// Set parses a flag value.
func (d *Duration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration like 500ms or 2s", s)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalJSON reads "1s" (YAML reaches us as JSON).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s is not a duration string like \"2s\"", b)
	}
	return d.Set(s)
}

// MarshalJSON writes "1s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

type int32Value struct{ p *int32 }

func (v int32Value) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(int(*v.p))
}
func (v int32Value) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return errors.New("not a 32-bit integer")
	}
	*v.p = int32(n)
	return nil
}

type listValue struct{ p *[]string }

func (v listValue) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}
func (v listValue) Set(s string) error {
	*v.p = nil
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*v.p = append(*v.p, item)
		}
	}
	return nil
}

type startValue kafka.StartOffset

func (v *startValue) String() string { return string(*v) }
func (v *startValue) Set(s string) error {
	if s != string(kafka.Earliest) && s != string(kafka.Latest) {
		return errors.New("earliest or latest")
	}
	*v = startValue(s)
	return nil
}
