package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docexec/docexec/executor/config"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestTheExampleFileLoadsAndFlagsBeatEnvironmentBeatsFile(t *testing.T) {
	cfg, err := config.Load([]string{"--config", "../../examples/executor.yaml", "--batch.size", "7"},
		env(map[string]string{"DOCEXEC_POSTGRES_DSN": "postgres://x", "DOCEXEC_BATCH_SIZE": "9", "DOCEXEC_SYNC_INTERVAL": "3s", "DOCEXEC_PARTITION": "4"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Batch.Size != 7 || time.Duration(cfg.Sync.Interval) != 3*time.Second || cfg.Partition != 4 ||
		cfg.Postgres.DSN != "postgres://x" || cfg.Kafka.InputTopic != "doc-updates" || cfg.Kafka.Group != "docexec-docs" {
		t.Fatalf("got %+v", cfg)
	}
}

func TestInvalidSettingsAreNamed(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.yaml")
	if err := os.WriteFile(unknown, []byte("pool: p\nkafka:\n  inputTopik: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"--pool", "p", "--kafka.brokers", "b:9092", "--kafka.inputTopic", "in", "--kafka.outputTopic", "out",
		"--kafka.deadLetterTopic", "dlq", "--redis.addresses", "r:6379", "--postgres.dsn", "postgres://x"}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"a complete configuration is valid", base, ""},
		{"the input topic is required", append(base, "--kafka.inputTopic", ""), "kafka.inputTopic"},
		{"output must differ from input", append(base, "--kafka.outputTopic", "in"), "kafka.outputTopic"},
		{"an unknown format is refused", append(base, "--kafka.format", "xml"), "kafka.format"},
		{"a zero batch is refused", append(base, "--batch.size", "0"), "batch.size"},
		{"a bad duration is refused", append(base, "--sync.interval", "soon"), "sync.interval"},
		{"a clean TTL under a second is refused", append(base, "--redis.cleanTTL", "500ms"), "redis.cleanTTL"},
		{"a clean TTL of 0 keeps states", append(base, "--redis.cleanTTL", "0s"), ""},
		{"the start offset is earliest or latest", append(base, "--kafka.startOffset", "middle"), "kafka.startOffset"},
		{"SCRAM-SHA-512 is a mechanism", append(base, "--kafka.sasl.mechanism", "SCRAM-SHA-512", "--kafka.sasl.username", "u", "--kafka.sasl.password", "p"), ""},
		{"an unknown SASL mechanism is refused", append(base, "--kafka.sasl.mechanism", "SCRAM-SHA-1", "--kafka.sasl.username", "u", "--kafka.sasl.password", "p"), "kafka.sasl.mechanism"},
		{"SASL without a password is refused", append(base, "--kafka.sasl.mechanism", "SCRAM-SHA-256", "--kafka.sasl.username", "u"), "kafka.sasl.password"},
		{"SASL without a user is refused", append(base, "--kafka.sasl.mechanism", "PLAIN", "--kafka.sasl.password", "p"), "kafka.sasl.username"},
		{"a client certificate needs its key", append(base, "--kafka.tls.enabled", "--kafka.tls.certFile", "c.pem"), "kafka.tls"},
		{"TLS files need TLS enabled", append(base, "--kafka.tls.caFile", "ca.pem"), "tls.enabled"},
		{"an unknown key in the file is refused", append(base, "--config", unknown), "inputTopik"},
		{"a missing file is reported", append(base, "--config", filepath.Join(dir, "none.yaml")), "none.yaml"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Load(c.args, env(nil))
			if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
				t.Fatalf("got %v, want an error naming %q", err, c.want)
			}
		})
	}
}

func TestEnvironmentNames(t *testing.T) {
	for flag, want := range map[string]string{"kafka.inputTopic": "DOCEXEC_KAFKA_INPUT_TOPIC", "redis.cleanTTL": "DOCEXEC_REDIS_CLEAN_TTL", "pool": "DOCEXEC_POOL"} {
		if got := config.EnvName(flag); got != want {
			t.Errorf("%s: %s, want %s", flag, got, want)
		}
	}
}
