// Package kafka is the executor's Kafka side, on IBM/sarama: read one
// partition from an offset in batches, and publish a batch's states, dead
// letters and consumer offset in one transaction whose id belongs to the
// pool and partition, so that a newer executor's producer fences any older
// one.
//
// sarama stays inside: records, headers and messages are this package's
// own types, sharing their bytes with sarama's rather than copying them,
// and every setting is checked where a client, reader or writer is built
// (ErrInvalidConfig).
package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/IBM/sarama"
)

// DefaultVersion is the Kafka protocol version spoken unless configured:
// the oldest with everything the executor uses (transactions, offsets in
// transactions, read-committed fetches).
const DefaultVersion = "2.8.0"

// DefaultCompression compresses produced batches: web texts shrink to a
// third or less, and lz4 costs the least CPU of the codecs that do that.
const DefaultCompression = "lz4"

// Compressions are the accepted values of Config.Compression.
var Compressions = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// Config says how to reach the brokers.
type Config struct {
	// Brokers lists host:port seeds.
	Brokers []string `json:"brokers"`
	// Version is the Kafka protocol version; default DefaultVersion.
	Version string `json:"version,omitempty"`
	// ClientID names the client in broker logs and quotas.
	ClientID string `json:"clientID,omitempty"`
	TLS      TLS    `json:"tls,omitempty"`
	SASL     SASL   `json:"sasl,omitempty"`
	// Compression of what the executor produces: none, gzip, snappy, lz4
	// or zstd; default DefaultCompression.
	Compression string `json:"compression,omitempty"`
	// Timeout, when set, bounds each network step and allows a single
	// metadata retry: for callers that must not hang on dead brokers.
	Timeout time.Duration `json:"-"`
}

// TLS configures encrypted connections; files are PEM.
type TLS struct {
	Enabled bool `json:"enabled,omitempty"`
	// CAFile verifies the brokers; the system roots when empty.
	CAFile string `json:"caFile,omitempty"`
	// CertFile and KeyFile authenticate this client (mutual TLS).
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// CA, Cert and Key are the same PEM held in memory, for callers that
	// read them from elsewhere than files (the operator reads Secrets); a
	// file, when named, is read instead.
	CA   []byte `json:"-"`
	Cert []byte `json:"-"`
	Key  []byte `json:"-"`
	// InsecureSkipVerify skips verifying the brokers: for tests only.
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// SASLMechanisms are the accepted values of SASL.Mechanism, besides ""
// (no SASL).
var SASLMechanisms = []string{sarama.SASLTypePlaintext, sarama.SASLTypeSCRAMSHA256, sarama.SASLTypeSCRAMSHA512}

// SASL configures SASL authentication.
type SASL struct {
	// Mechanism is "" (none) or one of SASLMechanisms.
	Mechanism string `json:"mechanism,omitempty"`
	Username  string `json:"username,omitempty"`
	// Password is best given by environment (DOCEXEC_KAFKA_SASL_PASSWORD).
	Password string `json:"password,omitempty"`
}

// Validate reports the first invalid field, named as in the config file.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("kafka.brokers: at least one broker is required")
	}
	if c.Version != "" {
		if _, err := sarama.ParseKafkaVersion(c.Version); err != nil {
			return fmt.Errorf("kafka.version: %w", err)
		}
	}
	if c.SASL.Mechanism != "" && !slices.Contains(SASLMechanisms, c.SASL.Mechanism) {
		return fmt.Errorf("kafka.sasl.mechanism: %q is not one of %v (or empty, for no SASL)", c.SASL.Mechanism, SASLMechanisms)
	}
	if c.SASL.Mechanism != "" && c.SASL.Username == "" {
		return errors.New("kafka.sasl.username: required with kafka.sasl.mechanism")
	}
	if c.SASL.Mechanism != "" && c.SASL.Password == "" {
		return errors.New("kafka.sasl.password: required with kafka.sasl.mechanism (best from DOCEXEC_KAFKA_SASL_PASSWORD)")
	}
	if c.Compression != "" && !slices.Contains(Compressions, c.Compression) {
		return fmt.Errorf("kafka.compression: %q is not one of %v", c.Compression, Compressions)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") || (len(c.TLS.Cert) == 0) != (len(c.TLS.Key) == 0) {
		return errors.New("kafka.tls: a client certificate and its key go together")
	}
	if !c.TLS.Enabled && (c.TLS.CAFile != "" || c.TLS.CertFile != "" || len(c.TLS.CA) > 0 || len(c.TLS.Cert) > 0) {
		return errors.New("kafka.tls: a CA or client certificate needs tls.enabled")
	}
	return nil
}

// ErrInvalidConfig marks settings refused where a client, reader or writer
// is built, before any connection: they would fail later, less clearly.
var ErrInvalidConfig = errors.New("kafka: invalid configuration")

// sarama returns the sarama settings shared by readers and writers, after
// validating c: every client, producer and writer is built through it.
func (c Config) sarama() (*sarama.Config, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	sc := sarama.NewConfig()
	version := c.Version
	if version == "" {
		version = DefaultVersion
	}
	v, err := sarama.ParseKafkaVersion(version)
	if err != nil {
		return nil, fmt.Errorf("kafka: version %q: %w", version, err)
	}
	sc.Version = v
	sc.ClientID = "docexec"
	if c.ClientID != "" {
		sc.ClientID = c.ClientID
	}
	sc.Metadata.Retry.Backoff = 100 * time.Millisecond
	if c.Timeout > 0 {
		sc.Net.DialTimeout, sc.Net.ReadTimeout, sc.Net.WriteTimeout = c.Timeout, c.Timeout, c.Timeout
		sc.Metadata.Retry.Max = 1
	}
	if c.TLS.Enabled {
		tc, err := c.TLS.config()
		if err != nil {
			return nil, err
		}
		sc.Net.TLS.Enable, sc.Net.TLS.Config = true, tc
	}
	if c.SASL.Mechanism != "" {
		sc.Net.SASL.Enable = true
		sc.Net.SASL.Mechanism = sarama.SASLMechanism(c.SASL.Mechanism)
		sc.Net.SASL.User, sc.Net.SASL.Password = c.SASL.Username, c.SASL.Password
		sc.Net.SASL.SCRAMClientGeneratorFunc = scramClients(c.SASL.Mechanism)
	}
	return sc, nil
}

// connect opens a sarama client of the brokers. Its error names the SASL
// user: a broker that refuses the credentials may just close the
// connection, and "EOF" alone sends nobody to the password.
func (c Config) connect(sc *sarama.Config) (sarama.Client, error) {
	client, err := sarama.NewClient(c.Brokers, sc)
	if err == nil {
		return client, nil
	}
	if c.SASL.Mechanism != "" {
		return nil, fmt.Errorf("connect to %v as %s user %q: %w", c.Brokers, c.SASL.Mechanism, c.SASL.Username, err)
	}
	return nil, fmt.Errorf("connect to %v: %w", c.Brokers, err)
}

// compression returns the configured codec's name.
func (c Config) compression() string {
	if c.Compression == "" {
		return DefaultCompression
	}
	return c.Compression
}

// idempotentProducer returns the settings of a producer that writes each
// record exactly once per partition, partitioned as partitioner says, to
// topics that accept record batches of limit bytes: no batch it sends is
// larger, and it refuses records above RecordBudget.
func (c Config) idempotentProducer(partitioner sarama.PartitionerConstructor, limit int) (*sarama.Config, error) {
	sc, err := c.sarama()
	if err != nil {
		return nil, err
	}
	if err := sc.Producer.Compression.UnmarshalText([]byte(c.compression())); err != nil {
		return nil, fmt.Errorf("kafka: compression: %w", err)
	}
	sc.Producer.Idempotent = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Partitioner = partitioner
	// sarama closes a partition's batch before it reaches this many bytes of
	// records, and refuses a single record above it.
	sc.Producer.MaxMessageBytes = RecordBudget(limit, c.compression())
	sc.Net.MaxOpenRequests = 1 // idempotence needs ordered requests
	return sc, nil
}

func (t TLS) config() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // opt-in, for tests
	ca, err := pemOf(t.CAFile, t.CA)
	if err != nil {
		return nil, fmt.Errorf("kafka: tls CA: %w", err)
	}
	if ca != nil {
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(ca) {
			return nil, errors.New("kafka: tls CA: no certificate found")
		}
	}
	cert, err := pemOf(t.CertFile, t.Cert)
	if err != nil {
		return nil, fmt.Errorf("kafka: tls client certificate: %w", err)
	}
	key, err := pemOf(t.KeyFile, t.Key)
	if err != nil {
		return nil, fmt.Errorf("kafka: tls client key: %w", err)
	}
	if cert != nil || key != nil {
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("kafka: tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// pemOf returns the contents of file when named, else held.
func pemOf(file string, held []byte) ([]byte, error) {
	if file == "" {
		return held, nil
	}
	return os.ReadFile(file)
}
