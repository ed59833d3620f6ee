package kafka_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/internal/testenv"
)

func TestSASLAuthenticatesReadsAndTransactions(t *testing.T) {
	for _, mechanism := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mechanism, func(t *testing.T) {
			cluster := testenv.KafkaClusterWith(t, 1, []string{"in", "out"}, kfake.EnableSASL(), kfake.Superuser(mechanism, "docexec", "s3cret"))
			cfg := kafka.Config{Brokers: cluster.ListenAddrs(), SASL: kafka.SASL{Mechanism: mechanism, Username: "docexec", Password: "s3cret"}}
			publishAndReadBack(t, cfg)

			cfg.SASL.Password, cfg.Timeout = "wrong", 5*time.Second
			if c, err := kafka.Connect(cfg); err == nil {
				c.Close()
				t.Fatal("connected with a wrong password")
			} else if want := mechanism + ` user "docexec"`; !strings.Contains(err.Error(), want) {
				t.Fatalf("a wrong password failed with %v, want an error naming %s", err, want)
			}
		})
	}
}

func TestMutualTLSPresentsTheClientCertificate(t *testing.T) {
	certs := testenv.NewCerts(t)
	cluster := testenv.KafkaClusterWith(t, 1, []string{"in", "out"}, kfake.TLS(certs.ServerRequiringClients(t)))
	dir := t.TempDir()
	file := func(name string, pem []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cfg := kafka.Config{Brokers: cluster.ListenAddrs(), TLS: kafka.TLS{Enabled: true,
		CAFile: file("ca.crt", certs.CA), CertFile: file("tls.crt", certs.ClientCert), KeyFile: file("tls.key", certs.ClientKey)}}
	publishAndReadBack(t, cfg)

	// The same from memory, as the operator holds what it read of Secrets.
	publishAndReadBack(t, kafka.Config{Brokers: cluster.ListenAddrs(), TLS: kafka.TLS{Enabled: true, CA: certs.CA, Cert: certs.ClientCert, Key: certs.ClientKey}})

	anonymous := kafka.Config{Brokers: cluster.ListenAddrs(), Timeout: 5 * time.Second, TLS: kafka.TLS{Enabled: true, CA: certs.CA}}
	if c, err := kafka.Connect(anonymous); err == nil {
		c.Close()
		t.Fatal("connected without a client certificate to brokers that require one")
	}
}

// publishAndReadBack publishes a message in a transaction and reads it
// back, both authenticated as cfg says.
func publishAndReadBack(t *testing.T, cfg kafka.Config) {
	t.Helper()
	w, err := kafka.NewWriter(cfg, kafka.WriterOptions{TransactionalID: kafka.TransactionalID("p", "in", 0), Group: "g", InputTopic: "in"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, err := kafka.Connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	start, err := client.Offset("out", 0, kafka.Latest)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Publish(ctx, []kafka.Message{{Topic: "out", Value: []byte("v")}}, start+1); err != nil {
		t.Fatal(err)
	}
	if m := read(t, client, "out", 0, start, 1)[0]; string(m.Value) != "v" {
		t.Fatalf("read %q, want v", m.Value)
	}
}
