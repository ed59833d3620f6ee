package manager_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
	"github.com/docexec/docexec/manager"
)

// syncBuffer is the manager's stderr, read while it writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAGracefulStopReleasesTheLeaseAndLogsNoError(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the test control plane")
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets, _ = filepath.Abs("../bin/k8s")
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{"../config/crd/bases"}, ErrorIfCRDPathMissing: true, BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start the control plane (run `make test` or hack/k8s-binaries.sh): %v", err)
	}
	t.Cleanup(func() { env.Stop() }) //nolint:errcheck
	user, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", path)
	k8s, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		// Out of a cluster, as on a laptop: the Lease goes to the kubeconfig
		// context's namespace ("default" here) without a flag for it.
		exit <- manager.Main(ctx, []string{"--metrics-bind-address=0", "--health-probe-bind-address=0"}, &stderr)
	}()
	// Elected and reconciling: a pool gets its status.
	pool := &docexecv1.DocExecutorPool{ObjectMeta: metav1.ObjectMeta{Name: "docs", Namespace: "default"}, Spec: docexecv1.DocExecutorPoolSpec{
		Partitions: ptr.To[int32](1),
		Kafka:      docexecv1.KafkaSpec{Brokers: []string{"kafka:9092"}, InputTopic: "in", OutputTopic: "out", DeadLetterTopic: "dead"},
		Redis:      docexecv1.RedisSpec{Addresses: []string{"redis:6379"}},
		Postgres:   docexecv1.PostgresSpec{DSNSecretRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "pg"}, Key: "dsn"}},
	}}
	if err := k8s.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var l coordinationv1.Lease
		err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: "docexec-operator.docexec.io"}, &l)
		elected := err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != ""
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pool), pool); elected && err == nil && pool.Status.ObservedGeneration > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the operator was not elected, or did not reconcile:\n%s", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel() // SIGTERM
	if code := <-exit; code != 0 {
		t.Fatalf("exit code %d:\n%s", code, stderr.String())
	}
	// It handed its Lease over rather than leave it to expire.
	var l coordinationv1.Lease
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "docexec-operator.docexec.io"}, &l); err != nil ||
		(l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "") {
		t.Errorf("after a graceful stop the Lease is held by %v (%v), want released", ptr.Deref(l.Spec.HolderIdentity, ""), err)
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, `"level":"error"`) {
			t.Errorf("a graceful stop logged an error: %s", line)
		}
	}
}
