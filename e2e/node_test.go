package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kfake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/docexec/docexec/internal/testenv"
)

// node is the single-node cluster of hack/cluster.sh, which `make test`
// starts around the tests (hack/cluster.sh with ...) and names in
// DOCEXEC_TEST_* variables: a real kubelet runs the pods, on containerd.
type node struct {
	*cluster
	kube kubernetes.Interface
	ip   string // the node's address on its bridge; pods reach the host there
	dir  string // hack/cluster.sh's state directory
}

func newNode(t *testing.T) *node {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs hack/cluster.sh's node")
	}
	kubeconfig, ip := os.Getenv("DOCEXEC_TEST_KUBECONFIG"), os.Getenv("DOCEXEC_TEST_NODE_IP")
	if kubeconfig == "" || ip == "" {
		t.Fatal("needs a cluster node: run `make test`, or `hack/cluster.sh with go test ./e2e -run Cluster`")
	}
	bin, _ := filepath.Abs("../bin/k8s")
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("DOCEXEC_CLUSTER_DIR")
	if dir == "" {
		dir = "/tmp/docexec-cluster"
	}
	return &node{cluster: &cluster{t: t, kubeconfig: kubeconfig, bin: bin}, kube: kubernetes.NewForConfigOrDie(rc), ip: ip, dir: dir}
}

// buildImage builds the docexec image with hack/build-image.sh (which
// imports it into the node's containerd) and returns its name.
func (n *node) buildImage(tag string) string {
	n.t.Helper()
	cmd := exec.Command("../hack/build-image.sh", filepath.Join(n.t.TempDir(), "docexec.tar"))
	cmd.Env = append(os.Environ(), "IMAGE_TAG="+tag)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		n.t.Fatalf("hack/build-image.sh: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// restrictedNamespace creates a namespace whose pods must pass the
// restricted Pod Security level.
func (n *node) restrictedNamespace(name string) {
	n.t.Helper()
	n.run("kubectl", "create", "namespace", name)
	n.run("kubectl", "label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
		"pod-security.kubernetes.io/enforce-version=latest")
	// Waiting, so that the next run on the same node can create it again.
	n.t.Cleanup(func() { n.try("kubectl", "delete", "namespace", name, "--wait=true", "--timeout=2m") }) //nolint:errcheck
}

// pods lists the pods matching a label selector.
func (n *node) pods(ns, selector string) []corev1.Pod {
	n.t.Helper()
	list, err := n.kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		n.t.Fatalf("list pods %s: %v", selector, err)
	}
	return list.Items
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readyPods counts the running, ready, not terminating pods of a selector.
func (n *node) readyPods(ns, selector string) int {
	ready := 0
	for _, p := range n.pods(ns, selector) {
		if podReady(&p) {
			ready++
		}
	}
	return ready
}

// holder returns the holder of a Lease ("" when none).
func (n *node) holder(ns, lease string) string {
	l, err := n.kube.CoordinationV1().Leases(ns).Get(context.Background(), lease, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func (n *node) pod(ns, name string) *corev1.Pod {
	n.t.Helper()
	p, err := n.kube.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		n.t.Fatalf("get pod %s: %v", name, err)
	}
	return p
}

// containerCgroup is the cgroup directory, in one v1 hierarchy, of a pod's
// first container (the kubelet runs with the cgroupfs driver).
func (n *node) containerCgroup(p *corev1.Pod, hierarchy string) string {
	n.t.Helper()
	if len(p.Status.ContainerStatuses) == 0 {
		n.t.Fatalf("pod %s has no container yet", p.Name)
	}
	_, id, _ := strings.Cut(p.Status.ContainerStatuses[0].ContainerID, "://")
	for _, pattern := range []string{"kubepods/pod%s/%s", "kubepods/*/pod%s/%s"} {
		matches, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", hierarchy, fmt.Sprintf(pattern, p.UID, id)))
		if len(matches) == 1 {
			return matches[0]
		}
	}
	n.t.Fatalf("no %s cgroup for container %s of pod %s", hierarchy, id, p.Name)
	return ""
}

// killContainer SIGKILLs every process of a pod's container, on the node,
// as the kernel's OOM killer or a crash would; the kubelet restarts it.
func (n *node) killContainer(p *corev1.Pod) {
	n.t.Helper()
	raw, err := os.ReadFile(filepath.Join(n.containerCgroup(p, "pids"), "cgroup.procs"))
	if err != nil {
		n.t.Fatal(err)
	}
	for _, field := range strings.Fields(string(raw)) {
		pid, _ := strconv.Atoi(field)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			n.t.Fatalf("kill %d of pod %s: %v", pid, p.Name, err)
		}
	}
}

// freeze stops (FROZEN) or resumes (THAWED) every process of a pod's
// container with the cgroup freezer: a pause the process cannot see.
func (n *node) freeze(p *corev1.Pod, state string) {
	n.t.Helper()
	if err := os.WriteFile(filepath.Join(n.containerCgroup(p, "freezer"), "freezer.state"), []byte(state), 0); err != nil {
		n.t.Fatalf("freezer %s of pod %s: %v", state, p.Name, err)
	}
}

// signalKubelet stops or continues the node's kubelet, so that it neither
// restarts containers nor reports on them, as on a lost node.
func (n *node) signalKubelet(sig syscall.Signal) {
	n.t.Helper()
	raw, err := os.ReadFile(filepath.Join(n.dir, "run", "kubelet.pid"))
	if err != nil {
		n.t.Fatalf("the kubelet's pid: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err := syscall.Kill(pid, sig); err != nil {
		n.t.Fatalf("signal the kubelet: %v", err)
	}
}

// hostServices are the servers the pods use, run on this host at the
// node's bridge address: a Kafka-protocol broker (kfake, in this process),
// redis-server with a password, and PostgreSQL with a password.
type hostServices struct {
	brokers  string
	kafka    *kfake.Cluster
	redis    string
	password string
	pg       *testenv.PostgresServer
}

func (n *node) startHostServices(topics ...string) *hostServices {
	n.t.Helper()
	s := &hostServices{password: fmt.Sprintf("pw-%d", time.Now().UnixNano())}
	var err error
	s.kafka, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topics...),
		kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			_, port, _ := net.SplitHostPort(addr)
			return net.Listen(network, net.JoinHostPort(n.ip, port))
		}))
	if err != nil {
		n.t.Fatalf("start kfake on %s: %v", n.ip, err)
	}
	n.t.Cleanup(s.kafka.Close)
	s.brokers = s.kafka.ListenAddrs()[0]
	s.redis = n.startRedis(s.password)
	s.pg = testenv.OwnPostgresWith(n.t, testenv.PostgresOptions{Host: n.ip, Password: s.password})
	return s
}

// startRedis runs a redis-server on the node's address that wants a
// password, until the test ends.
func (n *node) startRedis(password string) string {
	n.t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(n.ip, "0"))
	if err != nil {
		n.t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "redis-server", "--port", port, "--bind", n.ip, "--requirepass", password,
		"--save", "", "--appendonly", "no")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		cancel()
		n.t.Fatalf("start redis-server: %v", err)
	}
	n.t.Cleanup(func() {
		cancel()
		cmd.Wait() //nolint:errcheck // killed on purpose
	})
	n.within(10*time.Second, "redis-server answers on "+addr, func() bool {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, Password: password, DisableCache: true})
		if err != nil {
			return false
		}
		defer c.Close()
		return c.Do(context.Background(), c.B().Ping().Build()).Error() == nil
	})
	return addr
}

// follow streams a pod's log (kubectl logs -f) from now until its
// container ends; the returned function waits for that, at most d, and
// returns the log.
func (n *node) follow(ns, pod string, d time.Duration) (wait func() string) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	cmd := exec.CommandContext(ctx, filepath.Join(n.bin, "kubectl"), "--kubeconfig", n.kubeconfig, "logs", "-f", pod, "-n", ns)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		cancel()
		n.t.Fatal(err)
	}
	n.t.Cleanup(cancel)
	return func() string {
		cmd.Wait() //nolint:errcheck // ends with the container, or at d
		cancel()
		return logs.String()
	}
}

// errorLines are the lines of a log at error level (JSON or klog).
func errorLines(log string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		lower := strings.ToLower(line)
		if strings.Contains(lower, `"level":"error"`) || strings.HasPrefix(line, "E1") || strings.HasPrefix(line, "E0") {
			out = append(out, line)
		}
	}
	return out
}
