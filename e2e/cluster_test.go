package e2e

import (
	"context"
	"fmt"
	"github.com/docexec/docexec/executor/config"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The cluster suite's names.
const (
	systemNamespace = "docexec-system"
	poolNamespace   = "docs-e2e"
	poolName        = "docs"
	release         = "docexec"
	poolSelector    = "docexec.io/pool=" + poolName
)

// clusterSuite is one run of the operator on hack/cluster.sh's node: the
// chart installed with the image built here, one pool of three partitions
// times two replicas, the servers it uses, a producer and an oracle, and
// a reader of everything it publishes.
type clusterSuite struct {
	*node
	image string
	svc   *hostServices
	in    *stream
	out   *outputs
	rand  *rand.Rand
	gaps  []string // measured processing gaps, for docs/benchmarks.md
}

// TestClusterRunsTheOperatorAndSurvivesFaults installs the chart on a real
// node, runs a pool, and then breaks, grows, pauses, upgrades and deletes
// it the ways Kubernetes does, checking after each step that the output
// and PostgreSQL end at the oracle's states and that no state ever went
// backwards. The steps share one installation, so they run in order.
func TestClusterRunsTheOperatorAndSurvivesFaults(t *testing.T) {
	n := newNode(t)
	start := time.Now()
	s := &clusterSuite{node: n, image: n.buildImage(""), rand: rand.New(rand.NewPCG(1, 2))}
	t.Logf("built and imported %s in %v", s.image, time.Since(start).Round(time.Millisecond))
	s.svc = n.startHostServices(inputTopic, outputTopic, deadLetterTopic)
	s.in = newStream(t, s.svc.brokers)
	s.out = watchOutputs(t, s.svc.brokers)
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpState()
		}
		n.try("helm", "uninstall", release, "-n", systemNamespace, "--wait") //nolint:errcheck
	})

	steps := []struct {
		name string
		run  func()
	}{
		{"a. helm install: the operator runs and leads", s.installTheChart},
		{"b. a pool runs six executors and processes a stream", s.runAPool},
		{"c. faults: leaders deleted, killed, frozen, lost", s.survivesFaults},
		{"d. growing, shrinking and pausing the pool", s.resizeAndPause},
		{"e. helm upgrade rolls standbys first", s.upgradeTheChart},
		{"f. deleting the pool, uninstalling the chart", s.deleteAndUninstall},
	}
	for _, step := range steps {
		t0 := time.Now()
		t.Logf("== %s", step.name)
		step.run()
		t.Logf("== %s: done in %v", step.name, time.Since(t0).Round(time.Second))
	}
	t.Logf("processing gaps (no new output on the partition):\n%s", strings.Join(s.gaps, "\n"))
}

func (s *clusterSuite) installTheChart() {
	repo, tag, _ := strings.Cut(s.image, ":")
	// The operator's namespace enforces the restricted Pod Security level:
	// the chart's pod must pass it to run at all.
	s.restrictedNamespace(systemNamespace)
	s.run("helm", "install", release, "charts/docexec", "-n", systemNamespace,
		"--set", "image.repository="+repo, "--set", "image.tag="+tag, "--set", "image.pullPolicy=Never",
		"--wait", "--timeout", "3m")
	s.within(2*time.Minute, "the operator pod is ready", func() bool {
		return s.readyPods(systemNamespace, "app.kubernetes.io/instance="+release) == 1
	})
	operator := s.pods(systemNamespace, "app.kubernetes.io/instance="+release)[0].Name
	// Elected in-cluster, through the kubernetes Service, with its own RBAC.
	s.until(time.Minute, "the operator holds its leader Lease", func() error {
		if h := s.holder(systemNamespace, "docexec-operator.docexec.io"); !strings.HasPrefix(h, operator) {
			return fmt.Errorf("holder %q, operator pod %s", h, operator)
		}
		return nil
	})
}

// poolManifest is config/samples' pool pointed at the host's servers, with
// a fixed partition count.
func (s *clusterSuite) poolManifest(partitions int) string {
	return fmt.Sprintf(`apiVersion: docexec.io/v1alpha1
kind: DocExecutorPool
metadata:
  name: %s
spec:
  partitions: %d
  replicasPerPartition: 2
  kafka:
    brokers: [%q]
    inputTopic: %s
    outputTopic: %s
    deadLetterTopic: %s
  redis:
    addresses: [%q]
    passwordSecretRef: {name: docs-redis, key: password}
  postgres:
    dsnSecretRef: {name: docs-postgres, key: dsn}
  sync:
    interval: 500ms
`, poolName, partitions, s.svc.brokers, inputTopic, outputTopic, deadLetterTopic, s.svc.redis)
}

func (s *clusterSuite) runAPool() {
	s.restrictedNamespace(poolNamespace)
	// Pod Security is enforced there: a privileged pod is refused.
	if out, err := s.try("kubectl", "run", "privileged", "-n", poolNamespace, "--image", s.image, "--dry-run=server",
		"--overrides", `{"spec":{"containers":[{"name":"privileged","image":"`+s.image+`","securityContext":{"privileged":true}}]}}`); err == nil ||
		!strings.Contains(out, "violates PodSecurity") {
		s.t.Fatalf("a privileged pod was not refused by the namespace's Pod Security (%v):\n%s", err, out)
	}
	s.run("kubectl", "create", "secret", "generic", "docs-postgres", "-n", poolNamespace, "--from-literal=dsn="+s.svc.pg.DSN)
	s.run("kubectl", "create", "secret", "generic", "docs-redis", "-n", poolNamespace, "--from-literal=password="+s.svc.password)
	s.apply(s.poolManifest(3))
	s.waitServed(3)
	s.t.Logf("kubectl get dxp:\n%s", s.run("kubectl", "get", "dxp", "-n", poolNamespace))

	for p := range int32(3) {
		s.in.mustSend(p, updates(s.rand, p, 50, 120))
	}
	s.checkProcessed(3)
}

func (s *clusterSuite) apply(manifest string) {
	s.t.Helper()
	file := filepath.Join(s.t.TempDir(), "pool.yaml")
	if err := os.WriteFile(file, []byte(manifest), 0o600); err != nil {
		s.t.Fatal(err)
	}
	s.run("kubectl", "apply", "-n", poolNamespace, "-f", file)
}

// waitServed waits until partitions partitions each run two ready pods, one
// of which leads, as the pool's status and `kubectl get dxp` say.
func (s *clusterSuite) waitServed(partitions int) {
	s.t.Helper()
	s.until(4*time.Minute, fmt.Sprintf("%d partitions are served by 2 ready pods each", partitions), func() error {
		if ready := s.readyPods(poolNamespace, poolSelector); ready != 2*partitions {
			return fmt.Errorf("%d ready executor pods, want %d", ready, 2*partitions)
		}
		for p := range partitions {
			leader := s.holder(poolNamespace, fmt.Sprintf("%s-p%d", poolName, p))
			if !s.isReadyPodOf(leader, int32(p)) {
				return fmt.Errorf("partition %d: leader %q is not one of its ready pods", p, leader)
			}
		}
		status := s.run("kubectl", "get", "dxp", poolName, "-n", poolNamespace, "-o",
			`jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.readyPartitions} {.status.partitions}`)
		if want := fmt.Sprintf("True %d %d", partitions, partitions); status != want {
			return fmt.Errorf("status says %q (Ready, ready partitions, partitions), want %q", status, want)
		}
		return nil
	})
	for p := range partitions {
		leader := s.run("kubectl", "get", "dxp", poolName, "-n", poolNamespace, "-o",
			fmt.Sprintf("jsonpath={.status.partitionStatuses[%d].leader}", p))
		if !s.isReadyPodOf(leader, int32(p)) {
			s.t.Fatalf("status names %q as leader of partition %d", leader, p)
		}
	}
}

func (s *clusterSuite) isReadyPodOf(name string, partition int32) bool {
	for _, p := range s.pods(poolNamespace, fmt.Sprintf("%s,docexec.io/partition=%d", poolSelector, partition)) {
		if p.Name == name && podReady(&p) {
			return true
		}
	}
	return false
}

// checkProcessed waits until every input of the partitions is committed,
// then checks the output and PostgreSQL against the oracle.
func (s *clusterSuite) checkProcessed(partitions int32) {
	s.t.Helper()
	checkCommitted(s.cluster, s.svc.brokers, config.Group(poolNamespace+"/"+poolName), partitions, 3*time.Minute)
	s.out.checkAgainst(s.cluster, s.in, time.Minute)
	checkPostgres(s.cluster, s.svc.pg.DSN, s.in, time.Minute)
	s.t.Logf("%d updates in, %d states out, all at the oracle's states, none backwards", s.in.sent, s.out.count)
}

// survivesFaults breaks each partition's leader the ways Kubernetes and
// its nodes do, while every partition ticks 20 times a second, and
// measures how long the partition's output stalls.
func (s *clusterSuite) survivesFaults() {
	stop := s.in.ticking([]int32{0, 1, 2}, 50*time.Millisecond)
	s.fault("kubectl delete pod (graceful)", 0, func(leader *corev1.Pod) {
		logs := s.follow(poolNamespace, leader.Name, 2*time.Minute)
		s.run("kubectl", "delete", "pod", leader.Name, "-n", poolNamespace, "--wait=false")
		s.waitNewLeader(0, leader.Name)
		// A clean handover logs no error (reported, not failed: the
		// executor's own tests own its logs).
		log := logs()
		if !strings.Contains(log, `"level"`) {
			s.t.Fatalf("no log of %s was read:\n%s", leader.Name, log)
		}
		if lines := errorLines(log); len(lines) > 0 {
			s.t.Logf("the leader's graceful stop logged %d error lines:\n%s", len(lines), strings.Join(lines, "\n"))
		}
	})
	s.fault("container SIGKILLed on the node", 1, func(leader *corev1.Pod) {
		s.killContainer(leader)
	})
	s.fault("leader frozen past its lease, then thawed", 2, func(leader *corev1.Pod) {
		s.freeze(leader, "FROZEN")
		thawed := false
		defer func() {
			if !thawed {
				s.freeze(leader, "THAWED")
			}
		}()
		s.waitNewLeader(2, leader.Name)
		s.waitProgress(2)
		s.freeze(leader, "THAWED")
		thawed = true
		// Woken, it tries to finish what it was doing and is refused.
		s.until(time.Minute, leader.Name+" is fenced after it wakes", func() error {
			// --previous: should the kubelet have restarted it meanwhile.
			for _, which := range []string{"--previous=false", "--previous=true"} {
				if logs, _ := s.try("kubectl", "logs", leader.Name, "-n", poolNamespace, which); strings.Contains(logs, "Fenced by a newer leader") {
					return nil
				}
			}
			return fmt.Errorf("no fencing in its log yet")
		})
	})
	s.fault("container dead and its kubelet stopped (node loss)", 0, func(leader *corev1.Pod) {
		s.signalKubelet(syscall.SIGSTOP)
		stopped := true
		defer func() {
			if stopped {
				s.signalKubelet(syscall.SIGCONT)
			}
		}()
		s.killContainer(leader)
		// Nothing restarts it: a standby takes over once the lease expires.
		s.waitNewLeader(0, leader.Name)
		s.waitProgress(0)
		s.signalKubelet(syscall.SIGCONT)
		stopped = false
	})
	stop()
	for p := range int32(3) {
		s.in.mustSend(p, updates(s.rand, p, 50, 40))
	}
	s.checkProcessed(3)
}

// fault inflicts one fault on partition's leader while the partition
// processes a batch of updates, waits until the partition progresses again
// and is whole (two ready pods), and records the gap.
func (s *clusterSuite) fault(what string, partition int32, inflict func(leader *corev1.Pod)) {
	s.t.Helper()
	s.waitServed(3)
	s.waitProgress(partition)
	leader := s.pod(poolNamespace, s.holder(poolNamespace, fmt.Sprintf("%s-p%d", poolName, partition)))
	s.in.mustSend(partition, updates(s.rand, partition, 50, 60))
	t0 := time.Now()
	inflict(leader)
	s.waitProgress(partition)
	t1 := time.Now()
	gap := s.out.gap(partition, t0, t1)
	s.gaps = append(s.gaps, fmt.Sprintf("| %s | %v |", what, gap.Round(10*time.Millisecond)))
	s.t.Logf("%s: partition %d made no progress for %v", what, partition, gap.Round(10*time.Millisecond))
}

// waitProgress waits until a second's worth of ticks of partition came out.
func (s *clusterSuite) waitProgress(partition int32) {
	s.t.Helper()
	before := s.out.progressed(partition)
	s.within(2*time.Minute, fmt.Sprintf("partition %d progresses", partition), func() bool {
		return s.out.progressed(partition) >= before+20
	})
}

func (s *clusterSuite) waitNewLeader(partition int32, old string) {
	s.t.Helper()
	s.within(time.Minute, fmt.Sprintf("partition %d has a leader other than %s", partition, old), func() bool {
		h := s.holder(poolNamespace, fmt.Sprintf("%s-p%d", poolName, partition))
		return h != "" && h != old
	})
}

// resizeAndPause grows the topic and the pool to four partitions, shrinks
// the pool back, then pauses and resumes it.
func (s *clusterSuite) resizeAndPause() {
	s.in.grow(4, inputTopic, outputTopic, deadLetterTopic)
	s.run("kubectl", "patch", "dxp", poolName, "-n", poolNamespace, "--type", "merge", "-p", `{"spec":{"partitions":4}}`)
	s.waitServed(4)
	s.in.mustSend(3, updates(s.rand, 3, 50, 80))
	s.checkProcessed(4)

	s.run("kubectl", "patch", "dxp", poolName, "-n", poolNamespace, "--type", "merge", "-p", `{"spec":{"partitions":3}}`)
	s.within(2*time.Minute, "partition 3's Deployment and pods are gone", func() bool {
		_, err := s.try("kubectl", "get", "deployment", poolName+"-p3", "-n", poolNamespace)
		return err != nil && len(s.pods(poolNamespace, poolSelector+",docexec.io/partition=3")) == 0
	})
	s.waitServed(3)

	s.run("kubectl", "patch", "dxp", poolName, "-n", poolNamespace, "--type", "merge", "-p", `{"spec":{"paused":true}}`)
	s.within(2*time.Minute, "a paused pool has no pods", func() bool {
		return len(s.pods(poolNamespace, poolSelector)) == 0
	})
	// Updates wait in Kafka while it is paused.
	for p := range int32(3) {
		s.in.mustSend(p, updates(s.rand, p, 50, 40))
	}
	s.run("kubectl", "patch", "dxp", poolName, "-n", poolNamespace, "--type", "merge", "-p", `{"spec":{"paused":false}}`)
	s.waitServed(3)
	s.checkProcessed(3)
}

// upgradeTheChart changes the executor image with helm upgrade: every
// executor pod rolls, surge-first, standbys before the leader, so that
// leadership moves once per partition.
func (s *clusterSuite) upgradeTheChart() {
	image := s.buildImage("e2e-upgrade") // the same content under another name
	transitions := s.leaseTransitions()
	operator := s.pods(systemNamespace, "app.kubernetes.io/instance="+release)[0].Name
	operatorLog := s.follow(systemNamespace, operator, 3*time.Minute)
	stop := s.in.ticking([]int32{0, 1, 2}, 50*time.Millisecond)
	t0 := time.Now()
	s.run("helm", "upgrade", release, "charts/docexec", "-n", systemNamespace, "--reuse-values",
		"--set", "executorImage="+image, "--wait", "--timeout", "3m")
	s.until(5*time.Minute, "every executor pod runs "+image, func() error {
		for _, p := range s.pods(poolNamespace, poolSelector) {
			if p.Spec.Containers[0].Image != image || !podReady(&p) {
				return fmt.Errorf("pod %s runs %s (ready: %v)", p.Name, p.Spec.Containers[0].Image, podReady(&p))
			}
		}
		return nil
	})
	// The old operator stopped for the new one, and said nothing alarming.
	log := operatorLog()
	if !strings.Contains(log, "Operator started") {
		s.t.Fatalf("no log of the operator %s was read:\n%s", operator, log)
	}
	if lines := errorLines(log); len(lines) > 0 {
		s.t.Errorf("the operator's graceful stop logged errors:\n%s", strings.Join(lines, "\n"))
	}
	s.waitServed(3)
	for p := range int32(3) {
		s.waitProgress(p)
	}
	t1 := time.Now()
	stop()
	var longest time.Duration
	for p := range int32(3) {
		longest = max(longest, s.out.gap(p, t0, t1))
	}
	s.gaps = append(s.gaps, fmt.Sprintf("| helm upgrade rolling every executor (longest of 3 partitions) | %v |", longest.Round(10*time.Millisecond)))
	s.t.Logf("helm upgrade: longest processing gap %v", longest.Round(10*time.Millisecond))
	after := s.leaseTransitions()
	for p, n := range after {
		if n-transitions[p] > 1 {
			s.t.Errorf("partition %d changed leader %d times in one rollout; standbys first means once", p, n-transitions[p])
		}
	}
	for p := range int32(3) {
		s.in.mustSend(p, updates(s.rand, p, 50, 30))
	}
	s.checkProcessed(3)
}

func (s *clusterSuite) leaseTransitions() map[int32]int32 {
	s.t.Helper()
	out := map[int32]int32{}
	for p := range int32(3) {
		l, err := s.kube.CoordinationV1().Leases(poolNamespace).Get(context.Background(), fmt.Sprintf("%s-p%d", poolName, p), metav1.GetOptions{})
		if err != nil {
			s.t.Fatal(err)
		}
		if l.Spec.LeaseTransitions != nil {
			out[p] = *l.Spec.LeaseTransitions
		}
	}
	return out
}

// deleteAndUninstall deletes the pool (the garbage collector removes all
// it owned) and uninstalls the chart, which keeps the CRD.
func (s *clusterSuite) deleteAndUninstall() {
	s.run("kubectl", "delete", "dxp", poolName, "-n", poolNamespace, "--wait=true", "--timeout=2m")
	owned := "pods,deployments,replicasets,poddisruptionbudgets,leases,configmaps,serviceaccounts,services,roles,rolebindings"
	s.within(3*time.Minute, "everything the pool owned is gone", func() bool {
		out, err := s.try("kubectl", "get", owned, "-n", poolNamespace, "-l", poolSelector, "-o", "name")
		return err == nil && strings.TrimSpace(out) == ""
	})
	s.run("helm", "uninstall", release, "-n", systemNamespace, "--wait", "--timeout", "2m")
	s.within(time.Minute, "the operator is gone", func() bool {
		return len(s.pods(systemNamespace, "app.kubernetes.io/instance="+release)) == 0
	})
	// crds.keep (the default): users' pools outlive the operator.
	s.run("kubectl", "get", "crd", "docexecutorpools.docexec.io")
	s.run("kubectl", "delete", "crd", "docexecutorpools.docexec.io")
}

// dumpState logs what a failed run needs to be understood.
func (s *clusterSuite) dumpState() {
	for _, args := range [][]string{
		{"get", "nodes,pods,deployments,leases", "-A", "-o", "wide"},
		{"get", "dxp", "-A", "-o", "yaml"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"logs", "-n", systemNamespace, "-l", "app.kubernetes.io/instance=" + release, "--tail=200"},
		{"logs", "-n", poolNamespace, "-l", poolSelector, "--tail=60", "--prefix"},
	} {
		out, _ := s.try("kubectl", args...)
		s.t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
}
