// Package e2e installs the operator the way users do — kubectl apply -k and
// helm install — against a real kube-apiserver, runs the real
// `docexec manager` binary, and reads the result with kubectl.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/docexec/docexec/internal/testenv"
)

// cluster is a fresh control plane (etcd + kube-apiserver) with an admin
// kubeconfig, stopped when t ends. configure, if given, adjusts the control
// plane before it starts (e.g. API server flags).
type cluster struct {
	t          testing.TB
	env        *envtest.Environment
	kubeconfig string
	bin        string
}

func newCluster(t testing.TB, configure ...func(*envtest.Environment)) *cluster {
	t.Helper()
	testenv.NeedControlPlane(t)
	bin := testenv.KubeAssets()
	for _, tool := range []string{"kubectl", "helm"} {
		if _, err := os.Stat(filepath.Join(bin, tool)); err != nil {
			t.Fatalf("no %s in %s: run `make test` or hack/k8s-binaries.sh", tool, bin)
		}
	}
	// The tests install the CRD themselves, as users do.
	env, _ := testenv.ControlPlane(t, append([]func(*envtest.Environment){testenv.WithoutCRD}, configure...)...)
	c := &cluster{t: t, env: env, bin: bin}
	c.kubeconfig = c.user("admin", "system:masters")
	return c
}

// user returns the path of a kubeconfig that authenticates as name in
// groups; RBAC decides what it may do.
func (c *cluster) user(name string, groups ...string) string {
	c.t.Helper()
	return testenv.Kubeconfig(c.t, c.env, name, groups...)
}

// run runs one of the cluster's tools (kubectl, helm) from the repository
// root and returns its standard output; a failure fails the test.
func (c *cluster) run(tool string, args ...string) string {
	c.t.Helper()
	out, err := c.try(tool, args...)
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
	return out
}

func (c *cluster) try(tool string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(c.bin, tool), append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	cmd.Dir = ".."
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// eventually retries check until it passes or 60 s pass.
func (c *cluster) eventually(what string, check func() bool) {
	c.t.Helper()
	c.within(60*time.Second, what, check)
}

// within retries check until it passes or d passes.
func (c *cluster) within(d time.Duration, what string, check func() bool) {
	c.t.Helper()
	c.until(d, what, func() error {
		if !check() {
			return errors.New("not yet")
		}
		return nil
	})
}

// until retries check until it returns nil or d passes, then fails with
// its last error.
func (c *cluster) until(d time.Duration, what string, check func() error) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %v waiting until %s: %v", d, what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// established waits until the CRDs are Established. kubectl wait fails at
// once, rather than waiting, while a just-created CRD has no conditions
// yet: it is retried.
func (c *cluster) established(crds ...string) {
	c.t.Helper()
	args := append([]string{"wait", "--for=condition=Established", "--timeout=10s"}, crds...)
	c.until(60*time.Second, "the CRDs are established", func() error {
		out, err := c.try("kubectl", args...)
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	})
}

// startOperator runs `docexec manager` against the cluster, as the
// operator's ServiceAccount when installed (so its RBAC is what is tested),
// until t ends; flags given override the defaults (the last one wins).
func (c *cluster) startOperator(kubeconfig string, flags ...string) {
	c.t.Helper()
	c.background("operator", append(os.Environ(), "KUBECONFIG="+kubeconfig),
		testenv.Docexec(c.t), append([]string{"manager", "--leader-elect=false", "--metrics-bind-address=0", "--health-probe-bind-address=0"}, flags...)...)
}

// background runs a program until t ends, showing its output if t failed.
func (c *cluster) background(name string, env []string, path string, args ...string) *exec.Cmd {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		cancel()
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		cancel()
		cmd.Wait() //nolint:errcheck // killed on purpose
		if c.t.Failed() {
			c.t.Logf("%s logs:\n%s", name, logs.String())
		}
	})
	return cmd
}

func TestKubectlApplyInstallsTheOperatorAndASamplePool(t *testing.T) {
	c := newCluster(t)
	c.run("kubectl", "apply", "-k", "config/default")
	c.established("crd/docexecutorpools.docexec.io")
	for _, obj := range []string{"namespace/docexec-system", "deployment/docexec-operator", "serviceaccount/docexec-operator", "clusterrole/docexec-manager-role"} {
		if strings.Contains(obj, "clusterrole") {
			c.run("kubectl", "get", obj)
		} else {
			c.run("kubectl", "get", "-n", "docexec-system", obj)
		}
	}
	// The same again, server-side: idempotent.
	c.run("kubectl", "apply", "--server-side", "-k", "config/default")

	c.run("kubectl", "create", "namespace", "demo")
	c.run("kubectl", "apply", "-n", "demo", "-k", "config/samples")
	// The sample follows its topic, which needs a Kafka; fix the count.
	c.run("kubectl", "patch", "dxp", "docs", "-n", "demo", "--type", "merge", "-p", `{"spec":{"partitions":3}}`)
	// Stands in for the operator Deployment (no kubelet runs its pod here),
	// with the identity and so the RBAC the kustomization gave it.
	c.startOperator(c.user("system:serviceaccount:docexec-system:docexec-operator", "system:serviceaccounts", "system:serviceaccounts:docexec-system"))
	c.eventually("the sample pool has its partitions", func() bool {
		out, err := c.try("kubectl", "get", "deployments", "-n", "demo", "-l", "docexec.io/pool=docs", "-o", "name")
		return err == nil && strings.Count(out, "deployment.apps/") == 3
	})
	out := c.run("kubectl", "get", "dxp", "-n", "demo")
	if !strings.Contains(out, "READY") || !strings.Contains(out, "PARTITIONS") || !strings.Contains(out, "docs") {
		t.Fatalf("kubectl get dxp:\n%s", out)
	}
	c.eventually("the status counts 3 partitions", func() bool {
		out, _ := c.try("kubectl", "get", "dxp", "docs", "-n", "demo", "-o", "jsonpath={.status.partitions}")
		return out == "3"
	})
	wide := c.run("kubectl", "get", "dxp", "-n", "demo", "-o", "wide")
	if !strings.Contains(wide, "LEADERS") || !strings.Contains(wide, "MAX-LAG") {
		t.Errorf("kubectl get dxp -o wide shows no leaders or lag:\n%s", wide)
	}

	// The executors' Role reaches their own Leases and nothing else.
	executor := "system:serviceaccount:demo:docs-executor"
	for _, check := range []struct {
		verb, resource string
		allowed        bool
	}{
		{"update", "leases/docs-p0", true},
		{"patch", "leases/docs-p2", true},
		{"get", "leases/docs-p1", true},
		{"update", "leases/someone-else", false},
		{"create", "leases", false},
		{"get", "pods", false},
		{"get", "secrets", false},
	} {
		out, _ := c.try("kubectl", "auth", "can-i", check.verb, check.resource, "-n", "demo", "--as", executor)
		if got := strings.TrimSpace(out) == "yes"; got != check.allowed {
			t.Errorf("executor can %s %s: %q, want allowed=%v", check.verb, check.resource, out, check.allowed)
		}
	}
}

func TestHelmInstallsTheChart(t *testing.T) {
	c := newCluster(t)
	c.run("helm", "lint", "charts/docexec")
	manifest := c.run("helm", "template", "t", "charts/docexec", "--namespace", "docexec")
	if !strings.Contains(manifest, "kind: CustomResourceDefinition") || !strings.Contains(manifest, "helm.sh/resource-policy: keep") {
		t.Fatal("helm template: no kept CRD in the default manifest")
	}
	if without := c.run("helm", "template", "t", "charts/docexec", "--set", "crds.enabled=false"); strings.Contains(without, "kind: CustomResourceDefinition") {
		t.Fatal("crds.enabled=false still renders the CRD")
	}
	// Monitoring is off by default (its kinds need the Prometheus
	// Operator's CRDs); on, it lints clean.
	for _, kind := range []string{"kind: ServiceMonitor", "kind: PrometheusRule", "grafana_dashboard"} {
		if strings.Contains(manifest, kind) {
			t.Fatalf("the default manifest holds %s", kind)
		}
	}
	c.run("helm", append([]string{"lint", "charts/docexec"}, everyMonitoringOption...)...)
	c.run("helm", "install", "docexec", "charts/docexec", "--namespace", "docexec", "--create-namespace")
	c.established("crd/docexecutorpools.docexec.io")
	if out := c.run("kubectl", "get", "-n", "docexec", "deployment", "-l", "app.kubernetes.io/instance=docexec", "-o", "name"); !strings.Contains(out, "deployment.apps/docexec-operator") {
		t.Fatalf("the chart installed no operator Deployment: %q", out)
	}
	c.run("kubectl", "create", "namespace", "demo")
	c.run("kubectl", "apply", "-n", "demo", "-k", "config/samples")
	c.run("kubectl", "get", "dxp", "-n", "demo", "docs")
	c.run("helm", "uninstall", "docexec", "--namespace", "docexec")
	// crds.keep (the default) leaves the CRD, and so the users' pools.
	c.run("kubectl", "get", "crd", "docexecutorpools.docexec.io")
	c.run("kubectl", "get", "dxp", "-n", "demo", "docs")
}

// TestTheChartCanConfineTheOperatorToChosenNamespaces installs the chart
// with watchNamespaces and runs the operator as its ServiceAccount: it
// manages the pool of a chosen namespace, has no rights in another, and
// leaves that one's pool alone.
func TestTheChartCanConfineTheOperatorToChosenNamespaces(t *testing.T) {
	c := newCluster(t)
	for _, ns := range []string{"demo", "other"} {
		c.run("kubectl", "create", "namespace", ns)
	}
	c.run("helm", "install", "docexec", "charts/docexec", "--namespace", "docexec", "--create-namespace", "--set", "watchNamespaces={demo}")
	if out := c.run("kubectl", "get", "deployment", "-n", "docexec", "docexec-operator", "-o", "jsonpath={.spec.template.spec.containers[0].args}"); !strings.Contains(out, "--watch-namespaces=demo") {
		t.Fatalf("the operator is not told which namespaces to watch: %s", out)
	}
	c.established("crd/docexecutorpools.docexec.io")
	operator := "system:serviceaccount:docexec:docexec-operator"
	for _, check := range []struct {
		verb, resource, namespace string
		allowed                   bool
	}{
		{"create", "deployments", "demo", true},
		{"list", "docexecutorpools.docexec.io", "demo", true},
		{"create", "deployments", "other", false},
		{"list", "docexecutorpools.docexec.io", "other", false},
		{"get", "secrets", "other", false},
		{"create", "tokenreviews.authentication.k8s.io", "", true},
	} {
		args := []string{"auth", "can-i", check.verb, check.resource, "--as", operator}
		if check.namespace != "" {
			args = append(args, "-n", check.namespace)
		}
		out, _ := c.try("kubectl", args...)
		if got := strings.TrimSpace(out) == "yes"; got != check.allowed {
			t.Errorf("operator can %s %s in %q: %q, want allowed=%v", check.verb, check.resource, check.namespace, out, check.allowed)
		}
	}
	for _, ns := range []string{"demo", "other"} {
		c.run("kubectl", "apply", "-n", ns, "-k", "config/samples")
		c.run("kubectl", "patch", "dxp", "docs", "-n", ns, "--type", "merge", "-p", `{"spec":{"partitions":2}}`)
	}
	c.startOperator(c.user(operator, "system:serviceaccounts", "system:serviceaccounts:docexec"), "--watch-namespaces=demo")
	c.eventually("the pool in demo has its partitions", func() bool {
		out, err := c.try("kubectl", "get", "dxp", "docs", "-n", "demo", "-o", "jsonpath={.status.partitions}")
		return err == nil && out == "2"
	})
	if out := c.run("kubectl", "get", "deployments", "-n", "other", "-o", "name"); out != "" {
		t.Errorf("the operator acted outside its namespaces: %s", out)
	}
	if out := c.run("kubectl", "get", "dxp", "docs", "-n", "other", "-o", "jsonpath={.status}"); out != "" {
		t.Errorf("the pool of another namespace got a status: %s", out)
	}
}

// TestTheChartWithEveryOptionOnIsAcceptedByTheAPIServer renders the chart
// with every option on (monitoring, confined namespaces, secure metrics),
// lints it, and has the test API server accept every object in a
// server-side dry run, with the Prometheus Operator's CRDs installed (from
// e2e/testdata, see hack/monitoring-crds.sh) so that its ServiceMonitors
// and PrometheusRule are checked against their schema too.
func TestTheChartWithEveryOptionOnIsAcceptedByTheAPIServer(t *testing.T) {
	c := newCluster(t)
	every := append([]string{"--set", "watchNamespaces={demo,team-b}", "--set", "metrics.secure=true"}, everyMonitoringOption...)
	c.run("helm", append([]string{"lint", "charts/docexec"}, every...)...)
	c.run("kubectl", "apply", "--server-side", "-f", "e2e/testdata/monitoring-crds")
	c.established("crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
	for _, ns := range []string{"docexec", "demo", "team-b"} {
		c.run("kubectl", "create", "namespace", ns)
	}
	manifest := c.run("helm", append([]string{"template", "t", "charts/docexec", "--namespace", "docexec"}, every...)...)
	file := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(file, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	out := c.run("kubectl", "apply", "--dry-run=server", "-f", file)
	for _, want := range []string{"servicemonitor.monitoring.coreos.com/t-docexec-operator", "servicemonitor.monitoring.coreos.com/t-docexec-executors",
		"prometheusrule.monitoring.coreos.com/", "configmap/t-docexec-dashboard", "role.rbac.authorization.k8s.io/t-docexec-manager-role",
		"deployment.apps/t-docexec-operator", "customresourcedefinition.apiextensions.k8s.io/docexecutorpools.docexec.io"} {
		if !strings.Contains(out, want) {
			t.Errorf("the dry run did not accept %s:\n%s", want, out)
		}
	}
}

// TestTheChartGrantsTheGeneratedRules keeps the chart's ClusterRole equal
// to config/rbac/role.yaml, which controller-gen writes from the
// reconciler's RBAC markers.
func TestTheChartGrantsTheGeneratedRules(t *testing.T) {
	if testing.Short() {
		t.Skip("needs helm from hack/k8s-binaries.sh")
	}
	c := &cluster{t: t}
	c.bin, _ = filepath.Abs(testenv.KubeAssets())
	out, err := exec.Command(filepath.Join(c.bin, "helm"), "template", "t", "../charts/docexec").Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	var chart *rbacv1.ClusterRole
	for _, doc := range strings.Split(string(out), "\n---") {
		var obj rbacv1.ClusterRole
		if err := yaml.Unmarshal([]byte(doc), &obj); err == nil && obj.Kind == "ClusterRole" && strings.HasSuffix(obj.Name, "manager-role") {
			chart = &obj
		}
	}
	if chart == nil {
		t.Fatalf("no manager-role ClusterRole in the chart:\n%s", out)
	}
	raw, err := os.ReadFile("../config/rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var generated rbacv1.ClusterRole
	if err := yaml.Unmarshal(raw, &generated); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(chart.Rules, generated.Rules) {
		t.Fatalf("the chart's rules differ from config/rbac/role.yaml:\nchart: %+v\ngenerated: %+v", chart.Rules, generated.Rules)
	}
}

// startControllerManager runs kube-controller-manager's garbage collector
// and Deployment controllers against the cluster until t ends.
func (c *cluster) startControllerManager() {
	c.t.Helper()
	c.background("kube-controller-manager", nil, filepath.Join(c.bin, "kube-controller-manager"), "--kubeconfig", c.kubeconfig,
		"--controllers=garbage-collector-controller,deployment-controller,replicaset-controller",
		"--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false")
}

func TestDeletingAPoolDeletesEverythingItOwns(t *testing.T) {
	c := newCluster(t)
	c.run("kubectl", "apply", "-k", "config/crd")
	c.established("crd/docexecutorpools.docexec.io")
	c.startControllerManager()
	c.startOperator(c.kubeconfig)
	c.run("kubectl", "create", "namespace", "demo")
	c.run("kubectl", "apply", "-n", "demo", "-k", "config/samples")
	c.run("kubectl", "patch", "dxp", "docs", "-n", "demo", "--type", "merge", "-p", `{"spec":{"partitions":2}}`)
	owned := "deployments,replicasets,poddisruptionbudgets,leases,configmaps,serviceaccounts,services,roles,rolebindings"
	c.eventually("the pool's objects exist, down to the ReplicaSets", func() bool {
		out, err := c.try("kubectl", "get", owned, "-n", "demo", "-l", "docexec.io/pool=docs", "-o", "name")
		return err == nil && strings.Count(out, "deployment.apps/") == 2 && strings.Count(out, "replicaset.apps/") == 2 &&
			strings.Count(out, "lease.") == 2 && strings.Contains(out, "configmap/docs-config")
	})
	c.run("kubectl", "delete", "dxp", "docs", "-n", "demo")
	c.eventually("the garbage collector removed them all", func() bool {
		out, err := c.try("kubectl", "get", owned, "-n", "demo", "-l", "docexec.io/pool=docs", "-o", "name")
		return err == nil && strings.TrimSpace(out) == ""
	})
}
