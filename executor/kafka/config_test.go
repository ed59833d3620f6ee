package kafka_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/docexec/docexec/executor/kafka"
)

// TestABadSettingFailsWhereItIsGiven checks that what cannot work is
// refused, saying which setting, before anything connects: no broker
// listens at the address.
func TestABadSettingFailsWhereItIsGiven(t *testing.T) {
	nowhere := []string{"127.0.0.1:1"}
	writer := kafka.WriterOptions{TransactionalID: "t", Group: "g", InputTopic: "in"}
	for _, c := range []struct {
		name, want string
		build      func() error
	}{
		{"client, compression", "kafka.compression", func() error {
			_, err := kafka.Connect(kafka.Config{Brokers: nowhere, Compression: "brotli"})
			return err
		}},
		{"client, no brokers", "kafka.brokers", func() error { _, err := kafka.Connect(kafka.Config{}); return err }},
		{"producer, version", "kafka.version", func() error {
			_, err := kafka.NewProducer(kafka.Config{Brokers: nowhere, Version: "two"}, kafka.DefaultMaxMessageBytes)
			return err
		}},
		{"writer, SASL", "kafka.sasl.password", func() error {
			_, err := kafka.NewWriter(kafka.Config{Brokers: nowhere, SASL: kafka.SASL{Mechanism: "PLAIN", Username: "u"}}, writer)
			return err
		}},
		{"client, a CA in memory without TLS", "tls.enabled", func() error {
			_, err := kafka.Connect(kafka.Config{Brokers: nowhere, TLS: kafka.TLS{CA: []byte("pem")}})
			return err
		}},
		{"client, a certificate in memory without its key", "kafka.tls", func() error {
			_, err := kafka.Connect(kafka.Config{Brokers: nowhere, TLS: kafka.TLS{Enabled: true, Cert: []byte("pem")}})
			return err
		}},
		{"writer, group", "consumer group", func() error {
			_, err := kafka.NewWriter(kafka.Config{Brokers: nowhere}, kafka.WriterOptions{TransactionalID: "t", InputTopic: "in"})
			return err
		}},
	} {
		err := c.build()
		if !errors.Is(err, kafka.ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an invalid configuration naming %s", c.name, err, c.want)
		}
	}
}
