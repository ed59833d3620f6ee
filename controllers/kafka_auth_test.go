package controllers_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
	"github.com/docexec/docexec/controllers"
	"github.com/docexec/docexec/executor/config"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/internal/testenv"
)

// TestKafkaCredentialsComeFromSecretsOnly runs a pool against brokers that
// require both a client certificate and SCRAM-SHA-512. The operator reads
// the Secrets to discover the partitions; the pods get the same keys as
// mounted files and environment, and the ConfigMap holds none of them.
// The test then does what the kubelet and the executor would: resolves the
// pod's files and environment from the Secrets and connects with them.
func TestKafkaCredentialsComeFromSecretsOnly(t *testing.T) {
	certs := testenv.NewCerts(t)
	cluster := testenv.KafkaClusterWith(t, 2, []string{"updates", "states", "dead"},
		kfake.TLS(certs.ServerRequiringClients(t)), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "docexec", "scram-password"))
	e := newEnv(t, &controllers.KafkaTopics{Secrets: k8s, Remember: time.Nanosecond})
	e.secret("kafka-ca", "", map[string][]byte{"ca.crt": certs.CA})
	e.secret("kafka-client", corev1.SecretTypeTLS, map[string][]byte{"tls.crt": certs.ClientCert, "tls.key": certs.ClientKey})
	e.secret("kafka-user", "", map[string][]byte{"password": []byte("scram-password")})
	p := e.pool("secure", func(s *docexecv1.DocExecutorPoolSpec) {
		s.Kafka.Brokers = cluster.ListenAddrs()
		s.Kafka.TLS = &docexecv1.KafkaTLS{SecretName: "kafka-ca", ClientCertSecretName: "kafka-client"}
		s.Kafka.SASL = &docexecv1.KafkaSASL{Mechanism: "SCRAM-SHA-512", Username: "docexec",
			PasswordSecretRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "kafka-user"}, Key: "password"}}
	})
	e.reconcile(p)
	deps := e.deployments("secure")
	if got := names(deps); len(got) != 2 {
		t.Fatalf("deployments %v, want one for each of the 2 partitions the operator discovers", got)
	}

	var cm corev1.ConfigMap
	e.mustGet(&cm, "secure-config")
	for _, secret := range [][]byte{certs.CA, certs.ClientCert, certs.ClientKey, []byte("scram-password")} {
		if strings.Contains(cm.Data["config.yaml"], strings.TrimSpace(string(secret))) {
			t.Fatalf("the ConfigMap holds a Secret's value:\n%s", cm.Data["config.yaml"])
		}
	}

	pod := deps["secure-p0"].Spec.Template.Spec
	c := pod.Containers[0]
	envOf := containerEnv(c, func(ref *corev1.SecretKeySelector) string {
		return string(e.secretValue(ref.Name, ref.Key, "postgres://from-secret"))
	})
	if envOf["DOCEXEC_KAFKA_SASL_PASSWORD"] != "scram-password" {
		t.Fatalf("the pod's SASL password is %q, want the Secret's", envOf["DOCEXEC_KAFKA_SASL_PASSWORD"])
	}
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(cm.Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(append(slices.Clone(c.Args[1:]), "--config", file), func(k string) string { return envOf[k] })
	if err != nil {
		t.Fatalf("the pod's configuration does not load: %v\n%s", err, cm.Data["config.yaml"])
	}
	tls := &cfg.Kafka.TLS
	for _, path := range []*string{&tls.CAFile, &tls.CertFile, &tls.KeyFile} {
		*path = e.mountedFile(t, pod, *path)
	}
	cfg.Kafka.Timeout = 10 * time.Second
	client, err := kafka.Connect(cfg.Kafka.Config)
	if err != nil {
		t.Fatalf("the pod's Kafka settings do not connect: %v", err)
	}
	defer client.Close()
	if n, err := client.Partitions("updates"); err != nil || n != 2 {
		t.Fatalf("partitions %d, %v", n, err)
	}
}

// TestUnusableKafkaCredentialsSayWhy: a wrong password, or a Secret
// without the key named, degrades the pool saying which.
func TestUnusableKafkaCredentialsSayWhy(t *testing.T) {
	cluster := testenv.KafkaClusterWith(t, 1, []string{"updates", "states", "dead"},
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "docexec", "right"))
	e := newEnv(t, &controllers.KafkaTopics{Secrets: k8s, Remember: time.Nanosecond, Timeout: 5 * time.Second})
	e.secret("wrong", "", map[string][]byte{"password": []byte("wrong")})
	for _, c := range []struct{ pool, key, want string }{
		{"wrong-password", "password", `SCRAM-SHA-256 user "docexec"`},
		{"missing-key", "pass", "has no key pass"},
	} {
		p := e.pool(c.pool, func(s *docexecv1.DocExecutorPoolSpec) {
			s.Kafka.Brokers = cluster.ListenAddrs()
			s.Kafka.SASL = &docexecv1.KafkaSASL{Mechanism: "SCRAM-SHA-256", Username: "docexec",
				PasswordSecretRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "wrong"}, Key: c.key}}
		})
		e.reconcile(p)
		e.checkDegraded(p, "KafkaUnreachable", c.want)
	}
}

func (e *env) secret(name string, typ corev1.SecretType, data map[string][]byte) {
	e.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns}, Type: typ, Data: data}
	if err := k8s.Create(context.Background(), s); err != nil {
		e.t.Fatal(err)
	}
}

// secretValue returns a key of a Secret of the test, or otherwise when the
// Secret does not exist (the pool's PostgreSQL DSN, never read here).
func (e *env) secretValue(name, key, otherwise string) []byte {
	e.t.Helper()
	var s corev1.Secret
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: name}, &s); err != nil {
		return []byte(otherwise)
	}
	v, ok := s.Data[key]
	if !ok {
		e.t.Fatalf("Secret %s has no key %s", name, key)
	}
	return v
}

// mountedFile finds what the kubelet would put at path in pod's container
// (a key of a Secret in a projected volume), writes it to a temporary file
// and returns that file's path.
func (e *env) mountedFile(t *testing.T, pod corev1.PodSpec, path string) string {
	t.Helper()
	for _, m := range pod.Containers[0].VolumeMounts {
		rel, ok := strings.CutPrefix(path, m.MountPath+"/")
		if !ok {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.Projected == nil {
				continue
			}
			for _, src := range v.Projected.Sources {
				for _, item := range src.Secret.Items {
					if item.Path == rel {
						local := filepath.Join(t.TempDir(), rel)
						if err := os.WriteFile(local, e.secretValue(src.Secret.Name, item.Key, ""), 0o600); err != nil {
							t.Fatal(err)
						}
						return local
					}
				}
			}
		}
	}
	t.Fatalf("no volume of the pod puts a file at %s", path)
	return ""
}
