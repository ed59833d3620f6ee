package manager_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
	"github.com/docexec/docexec/internal/testenv"
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

// controlPlane starts a test API server with the CRD, points KUBECONFIG at
// it as an admin, and returns a client.
func controlPlane(t *testing.T) (client.Client, *rest.Config) {
	env, cfg := testenv.ControlPlane(t)
	t.Setenv("KUBECONFIG", testenv.Kubeconfig(t, env, "admin", "system:masters"))
	k8s, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return k8s, cfg
}

// TestTheOperator runs one `docexec manager` (controller-runtime allows one
// controller of a name per process) from outside the cluster, as on a
// laptop, and checks it in turn.
func TestTheOperator(t *testing.T) {
	k8s, cfg := controlPlane(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		// The Lease goes to the kubeconfig context's namespace ("default"
		// here) without a flag for it.
		exit <- manager.Main(ctx, []string{"--metrics-bind-address=" + addr, "--health-probe-bind-address=0"}, &stderr)
	}()
	// Elected and reconciling: a pool gets its status.
	pool := testenv.Pool("docs", "default", func(s *docexecv1.DocExecutorPoolSpec) { s.Partitions = ptr.To[int32](1) })
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
	t.Run("metrics are served only to callers allowed to read them", func(t *testing.T) {
		checkMetricsAccess(ctx, t, k8s, cfg, addr)
	})

	// A graceful stop releases the Lease and logs no error.
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

// checkMetricsAccess checks the operator's HTTPS /metrics at addr: 401
// without a token or with one the API server does not know, 403 for a
// ServiceAccount without the right, 200 for one bound to a role that may
// get /metrics.
func checkMetricsAccess(ctx context.Context, t *testing.T, k8s client.Client, cfg *rest.Config, addr string) {
	// A scraper bound to a role that may get /metrics, and a stranger.
	kube := kubernetes.NewForConfigOrDie(cfg)
	token := func(name string) string {
		t.Helper()
		if err := k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}); err != nil {
			t.Fatal(err)
		}
		tr, err := kube.CoreV1().ServiceAccounts("default").CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	scraper, stranger := token("scraper"), token("stranger")
	for _, obj := range []client.Object{
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "metrics-reader"}, Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "scraper-reads-metrics"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "metrics-reader"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "scraper", Namespace: "default"}}},
	} {
		if err := k8s.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}

	httpClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // a self-signed certificate, the default
	get := func(token string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for code, _ := get(scraper); code == 0; code, _ = get(scraper) { // until it listens
		if time.Now().After(deadline) {
			t.Fatalf("no HTTPS /metrics on %s", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d, want 401", code)
	}
	if code, _ := get("not-a-token"); code != http.StatusUnauthorized {
		t.Errorf("with a token the API server does not know: %d, want 401", code)
	}
	if code, _ := get(stranger); code != http.StatusForbidden {
		t.Errorf("a service account without the right: %d, want 403", code)
	}
	if code, body := get(scraper); code != http.StatusOK || !strings.Contains(body, "controller_runtime_reconcile_total") {
		t.Errorf("the scraper: %d, want 200 and the operator's metrics:\n%.300s", code, body)
	}
}
