package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/twmb/franz-go/pkg/kfake"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
	"github.com/docexec/docexec/controllers"
	"github.com/docexec/docexec/internal/testenv"
	"github.com/docexec/docexec/manager"
)

// BenchmarkScale measures the operator on pools of 1,000 and 10,000
// partitions (the API's maximum) against a control plane whose ReplicaSets,
// pods and their status are real: kube-apiserver, kube-controller-manager
// (Deployment, ReplicaSet and disruption controllers), kube-scheduler, and
// kwok faking the nodes and marking pods Running and Ready. The real
// `docexec manager` binary runs as its ServiceAccount, and the partitions'
// leaders are simulated on their Leases at the default timings (each
// partition's Lease claimed by one of its ready pods, then renewed every
// second). Per size it prints a table: the time until every child object
// exists and until status counts every partition ready, the operator's
// peak RSS and CPU, the API requests it issued, and once idle the API writes
// per minute, the operator's and everyone's.
//
//	make bench-scale        # both sizes
//	DOCEXEC_SCALE_PARTITIONS=1000 DOCEXEC_SCALE_IDLE=2m make bench-scale
//
// DOCEXEC_SCALE_PODS=false leaves out kube-controller-manager, the
// scheduler, kwok and the leaders: the operator alone against the API
// server, until every child exists and status counts every partition (none
// ready).
//
// It is a benchmark, not a test: each iteration builds a whole cluster, so
// run it with -benchtime 1x.
func BenchmarkScale(b *testing.B) {
	ctrllog.SetLogger(logr.Discard()) // envtest's
	sizes := []int32{1000, 10000}
	if v := os.Getenv("DOCEXEC_SCALE_PARTITIONS"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 32)
			if err != nil || n < 1 || n > 10000 {
				b.Fatalf("DOCEXEC_SCALE_PARTITIONS: %q is not a partition count from 1 to 10000", f)
			}
			sizes = append(sizes, int32(n))
		}
	}
	idle := envDuration(b, "DOCEXEC_SCALE_IDLE", time.Minute)
	pods := os.Getenv("DOCEXEC_SCALE_PODS") != "false"
	for _, n := range sizes {
		name := fmt.Sprintf("partitions=%d", n) // no comma: it ends up in kwok's --config paths, a list
		if !pods {
			name += "-alone"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				runScale(b, n, pods, idle).report(b)
			}
		})
	}
}

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return d
}

const (
	scaleNamespace = "bench"
	scalePool      = "docs"
	scaleReplicas  = 2
	scaleNodes     = 10
	operatorUser   = "system:serviceaccount:docexec-system:docexec-operator"
	// renewEvery is the pool's default failover.retryPeriod: a leader
	// renews its Lease that often.
	renewEvery = time.Second
)

// scaleResult is what one run measured.
type scaleResult struct {
	partitions int32
	pods       bool // with kube-controller-manager, the scheduler, kwok and leaders
	// From the pool's creation until every child object exists, every pod
	// is ready, and status counts every partition ready.
	children, podsReady, ready time.Duration
	childrenSeen               time.Duration // by this process's watch
	rssStart, rssPeak, rssEnd  int64         // bytes: before the pool, the most, at the end
	cpuRamp, cpuIdle           time.Duration // the operator's CPU time
	// CPU time by process (this one, playing the leaders and watching, and
	// those it started) until ready, and how busy the machine was then.
	cpuByProcess map[string]time.Duration
	machineBusy  float64
	// The operator's requests until ready, by verb (from its own client
	// metrics) and by verb and resource (from the API server's audit log).
	requests      map[string]float64
	auditRamp     map[string]int
	idle          time.Duration
	idlePasses    float64        // reconciles during the idle window
	idleOpWrites  map[string]int // the operator's writes in it, by verb and resource
	idleWrites    float64        // every API write in it
	idleLeaseW    float64        // of which Lease writes
	idleByRes     map[string]float64
	renewals      int64 // the simulated leaders' renewals in it
	renewLate     int64 // renewals due before the previous one of the lease ended
	renewFailures int64
}

func runScale(b *testing.B, partitions int32, pods bool, idle time.Duration) *scaleResult {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	res := &scaleResult{partitions: partitions, pods: pods, idle: idle}
	dir := b.TempDir()

	// Audit the operator's requests alone (everyone else's would cost the
	// API server more than what is measured).
	policy := filepath.Join(dir, "audit-policy.yaml")
	auditLog := filepath.Join(dir, "audit.log")
	writeFile(b, policy, fmt.Sprintf(`apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
  users: [%q]
- level: None
`, operatorUser))
	c := newCluster(b, func(env *envtest.Environment) {
		env.ControlPlane.GetAPIServer().Configure().
			Set("audit-policy-file", policy).
			Set("audit-log-path", auditLog).
			Set("audit-log-maxsize", "0")
	})
	admin := restConfig(b, c.kubeconfig)
	admin.ContentType = "application/vnd.kubernetes.protobuf"
	kube := kubernetes.NewForConfigOrDie(admin)

	// The operator's CRD and RBAC as users install them; its Deployment is
	// replaced by the binary run here.
	c.run("kubectl", "apply", "-k", "config/default")
	c.established("crd/docexecutorpools.docexec.io")
	c.run("kubectl", "delete", "deployment", "-n", "docexec-system", "docexec-operator")
	c.run("kubectl", "create", "namespace", scaleNamespace)

	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, "updates", "states", "dead-letters"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(kafka.Close)

	if pods {
		c.startFakeNodes(ctx, kube, dir)
	}

	// Watch what the pool should own.
	w := newScaleWatch(b, admin)

	// The operator, as its ServiceAccount, with its metrics on a free port.
	metricsAddr, pprofAddr := freeAddr(b), freeAddr(b)
	operator := c.background("operator", append(os.Environ(), "KUBECONFIG="+c.user(operatorUser, "system:serviceaccounts", "system:serviceaccounts:docexec-system")),
		testenv.Docexec(b), "manager", "--leader-elect=false", "--metrics-bind-address="+metricsAddr, "--metrics-secure=false", "--health-probe-bind-address=0",
		"--pprof-bind-address="+pprofAddr)
	// DOCEXEC_SCALE_PPROF=DIR keeps profiles of the operator there: CPU
	// over the first 30 s of the pool, the heap once it is ready.
	profiles := os.Getenv("DOCEXEC_SCALE_PPROF")
	metricsURL := "http://" + metricsAddr + "/metrics"
	c.until(60*time.Second, "the operator serves metrics", func() error { _, err := scrape(metricsURL); return err })
	time.Sleep(2 * time.Second) // its informers' initial lists
	before := mustScrape(b, metricsURL)
	cpu0, procs0, busy0 := cpuTime(b, operator.Process.Pid), processCPU(b), machineCPU(b)
	_, res.rssStart = memory(b, operator.Process.Pid)

	// The leaders: one ready pod of each partition claims its Lease as the
	// executors do (as their ServiceAccount), then renews it every second.
	execCfg := restConfig(b, c.user("system:serviceaccount:"+scaleNamespace+":"+scalePool+"-executor", "system:serviceaccounts", "system:serviceaccounts:"+scaleNamespace))
	leaders := &leaderSim{}
	if pods {
		leaders = newLeaderSim(ctx, kubernetes.NewForConfigOrDie(execCfg), partitions)
		w.setOnReadyPod(leaders.claim)
	}

	pool := scalePoolObject(partitions, kafka.ListenAddrs())
	cl, err := client.New(restConfig(b, c.kubeconfig), client.Options{Scheme: manager.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := cl.Create(ctx, pool); err != nil {
		b.Fatal(err)
	}
	if profiles != "" {
		go saveProfile(b, "http://"+pprofAddr+"/debug/pprof/profile?seconds=30", filepath.Join(profiles, fmt.Sprintf("cpu-%d.pprof", partitions)))
	}
	b.Logf("created a pool of %d partitions × %d replicas", partitions, scaleReplicas)

	deadline := envDuration(b, "DOCEXEC_SCALE_TIMEOUT", 30*time.Minute)
	progress := time.Now()
	for res.ready == 0 {
		time.Sleep(250 * time.Millisecond)
		since := time.Since(start)
		if since > deadline {
			b.Fatalf("not ready after %v: %s", deadline, w.summary(partitions))
		}
		if res.children == 0 && w.childrenExist(partitions) {
			res.children = since
			w.stopChildren()
		}
		if res.podsReady == 0 && (!pods || w.readyPods() == int(partitions)*scaleReplicas) {
			res.podsReady = since
		}
		if res.children > 0 && res.podsReady > 0 {
			var got docexecv1.DocExecutorPool
			if err := cl.Get(ctx, client.ObjectKeyFromObject(pool), &got); err != nil {
				b.Fatal(err)
			}
			ready := got.Status.ReadyPartitions
			if !pods { // nothing can be ready: every partition counted will do
				ready = int32(len(got.Status.PartitionStatuses))
			}
			if got.Status.Partitions == partitions && ready == partitions {
				res.ready = time.Since(start)
			}
		}
		if time.Since(progress) > 10*time.Second {
			progress = time.Now()
			// On stderr at once: a benchmark's log shows only at its end.
			fmt.Fprintf(os.Stderr, "%5.0fs: %s, leases claimed %d\n", since.Seconds(), w.summary(partitions), leaders.claimed.Load())
		}
	}
	readyAt := time.Now()
	cpu1, procs1, busy1 := cpuTime(b, operator.Process.Pid), processCPU(b), machineCPU(b)
	res.cpuRamp = cpu1 - cpu0
	res.cpuByProcess = map[string]time.Duration{}
	for name, t := range procs1 {
		res.cpuByProcess[name] = t - procs0[name]
	}
	res.machineBusy = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1])
	if profiles != "" {
		saveProfile(b, "http://"+pprofAddr+"/debug/pprof/heap", filepath.Join(profiles, fmt.Sprintf("heap-%d.pprof", partitions)))
	}
	res.requests = diffByLabel(before, mustScrape(b, metricsURL), "rest_client_requests_total", "method")

	// Settle (the last status writes, the disruption controller catching
	// up), then watch an idle minute.
	time.Sleep(15 * time.Second)
	opBefore, apiBefore := mustScrape(b, metricsURL), apiMetrics(b, kube)
	renew0, late0, fail0 := leaders.renewals.Load(), leaders.late.Load(), leaders.failures.Load()
	idleFrom, cpu2 := time.Now(), cpuTime(b, operator.Process.Pid)
	time.Sleep(idle)
	idleTo := time.Now()
	res.cpuIdle = cpuTime(b, operator.Process.Pid) - cpu2
	res.renewals, res.renewLate, res.renewFailures = leaders.renewals.Load()-renew0, leaders.late.Load()-late0, leaders.failures.Load()-fail0
	opAfter, apiAfter := mustScrape(b, metricsURL), apiMetrics(b, kube)
	res.idlePasses = sumWhere(opAfter, "controller_runtime_reconcile_total", `controller="docexecutorpool"`) -
		sumWhere(opBefore, "controller_runtime_reconcile_total", `controller="docexecutorpool"`)
	res.idleByRes = apiWrites(apiBefore, apiAfter)
	for r, n := range res.idleByRes {
		res.idleWrites += n
		if r == "leases" {
			res.idleLeaseW += n
		}
	}
	res.rssPeak, res.rssEnd = memory(b, operator.Process.Pid)
	var lastCreate time.Time
	res.auditRamp, lastCreate = auditCounts(b, auditLog, start, readyAt, false)
	res.idleOpWrites, _ = auditCounts(b, auditLog, idleFrom, idleTo, true)
	// The watch above saw the children late when the API server was
	// loaded; the audit log says when the last was created.
	res.childrenSeen = res.children
	if !lastCreate.IsZero() && lastCreate.Sub(start) < res.children {
		res.children = lastCreate.Sub(start)
	}
	return res
}

func (r *scaleResult) report(b *testing.B) {
	mib := func(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
	perMin := func(n float64) string { return fmt.Sprintf("%.0f", n/r.idle.Minutes()) }
	total := 0.0
	for _, n := range r.requests {
		total += n
	}
	var sb strings.Builder
	row := func(k, v string) { fmt.Fprintf(&sb, "| %s | %s |\n", k, v) }
	if r.pods {
		fmt.Fprintf(&sb, "\n| %d partitions × %d replicas | |\n|---|---:|\n", r.partitions, scaleReplicas)
	} else {
		fmt.Fprintf(&sb, "\n| %d partitions, the operator alone (no pods) | |\n|---|---:|\n", r.partitions)
	}
	row("every child object exists (its last create answered / seen by a watch)", fmt.Sprintf("%.1f s / %.1f s", r.children.Seconds(), r.childrenSeen.Seconds()))
	if r.pods {
		row("every pod ready (kwok)", fmt.Sprintf("%.1f s", r.podsReady.Seconds()))
		row("status: every partition ready", fmt.Sprintf("%.1f s", r.ready.Seconds()))
	} else {
		row("status: every partition counted", fmt.Sprintf("%.1f s", r.ready.Seconds()))
	}
	row("operator RSS: before the pool / peak (VmHWM) / at the end", mib(r.rssStart)+" / "+mib(r.rssPeak)+" / "+mib(r.rssEnd))
	row("operator CPU until ready / idle", fmt.Sprintf("%.1f s / %.1f s", r.cpuRamp.Seconds(), r.cpuIdle.Seconds()))
	cpu := map[string]string{}
	for name, t := range r.cpuByProcess {
		cpu[name] = fmt.Sprintf("%.0f s", t.Seconds())
	}
	row("CPU until ready, by process", formatCounts(cpu)+fmt.Sprintf("; machine %.0f%% busy", 100*r.machineBusy))
	row("operator API requests until ready", fmt.Sprintf("%.0f (%s)", total, formatCounts(r.requests)))
	row("… by verb and resource (audit)", formatCounts(r.auditRamp))
	row("idle: operator reconciles per minute", perMin(r.idlePasses))
	opWrites := 0
	for _, n := range r.idleOpWrites {
		opWrites += n
	}
	row("idle: operator writes per minute", fmt.Sprintf("%s %s", perMin(float64(opWrites)), formatCounts(r.idleOpWrites)))
	row("idle: API writes per minute, all / Leases", perMin(r.idleWrites)+" / "+perMin(r.idleLeaseW))
	byRes := map[string]string{}
	for res, n := range r.idleByRes {
		if res != "leases" && n > 0 {
			byRes[res] = perMin(n)
		}
	}
	row("idle: API writes per minute to anything but Leases", formatCounts(byRes))
	if r.pods {
		row("idle: Lease renewals per second (wanted / done)", fmt.Sprintf("%d / %.0f (late %d, failed %d)",
			r.partitions, float64(r.renewals)/r.idle.Seconds(), r.renewLate, r.renewFailures))
	}
	// On stdout: the testing package keeps only a benchmark's last log lines.
	fmt.Print(sb.String())
	b.ReportMetric(r.children.Seconds(), "children-s")
	b.ReportMetric(r.ready.Seconds(), "ready-s")
	b.ReportMetric(float64(r.rssPeak)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(total, "op-requests")
	b.ReportMetric(float64(opWrites)/r.idle.Minutes(), "idle-op-writes/min")
	b.ReportMetric(r.idleWrites/r.idle.Minutes(), "idle-writes/min")
	b.ReportMetric(float64(r.renewals)/r.idle.Seconds(), "renewals/s")
	b.ReportMetric(0, "ns/op") // one run of minutes; the metrics above say it
}

func formatCounts[V int | float64 | string](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %v", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func scalePoolObject(partitions int32, brokers []string) *docexecv1.DocExecutorPool {
	return &docexecv1.DocExecutorPool{
		ObjectMeta: metav1.ObjectMeta{Name: scalePool, Namespace: scaleNamespace},
		Spec: docexecv1.DocExecutorPoolSpec{
			Partitions:           ptr.To(partitions),
			ReplicasPerPartition: scaleReplicas,
			Kafka:                docexecv1.KafkaSpec{Brokers: brokers, InputTopic: "updates", OutputTopic: "states", DeadLetterTopic: "dead-letters"},
			Redis:                docexecv1.RedisSpec{Addresses: []string{"127.0.0.1:1"}},
			Postgres: docexecv1.PostgresSpec{DSNSecretRef: corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "docs-postgres"}, Key: "dsn"}},
			Image: "docexec/docexec:bench",
		},
	}
}

// startFakeNodes runs kube-controller-manager, kube-scheduler and kwok, and
// creates kwok's nodes. The controllers' client limits are raised well above
// their defaults (20 and 50 requests a second) and kube-controller-manager's
// workers from 5 to 20 per controller, as in large clusters, so that they do
// not bound what is measured.
func (c *cluster) startFakeNodes(ctx context.Context, kube kubernetes.Interface, dir string) {
	c.t.Helper()
	c.background("kube-controller-manager", nil, filepath.Join(c.bin, "kube-controller-manager"), "--kubeconfig", c.kubeconfig,
		// The node lifecycle controller lifts the not-ready taint off kwok's
		// nodes once they report ready.
		"--controllers=deployment-controller,replicaset-controller,disruption-controller,node-lifecycle-controller",
		"--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false",
		"--kube-api-qps=2000", "--kube-api-burst=4000", "--concurrent-deployment-syncs=20", "--concurrent-replicaset-syncs=20")
	scheduler := filepath.Join(dir, "scheduler.yaml")
	writeFile(c.t, scheduler, fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: %q, qps: 2000, burst: 4000}
leaderElection: {leaderElect: false}
`, c.kubeconfig))
	c.background("kube-scheduler", nil, filepath.Join(c.bin, "kube-scheduler"), "--config", scheduler, "--secure-port=0")

	kwokDir, _ := filepath.Abs("../bin/kwok")
	if v := os.Getenv("DOCEXEC_KWOK"); v != "" {
		kwokDir = v
	}
	if _, err := os.Stat(filepath.Join(kwokDir, "kwok")); err != nil {
		c.t.Fatalf("no kwok in %s: run hack/k8s-binaries.sh", kwokDir)
	}
	config := filepath.Join(dir, "kwok.yaml")
	writeFile(c.t, config, `apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  cidr: 10.128.0.0/9
  manageNodesWithAnnotationSelector: kwok.x-k8s.io/node=fake
  podPlayStageParallelism: 16
  nodePlayStageParallelism: 4
  nodeLeaseParallelism: 4
  podsOnNodeSyncParallelism: 4
  nodeLeaseDurationSeconds: 40
`)
	args := []string{"--kubeconfig", c.kubeconfig, "--config", config}
	// kwok's "fast" stages: nodes ready at once with heartbeats on Leases,
	// pods Running and Ready at once.
	for _, stage := range []string{"node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
		"pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml"} {
		args = append(args, "--config", filepath.Join(kwokDir, "stage", stage))
	}
	c.background("kwok", nil, filepath.Join(kwokDir, "kwok"), args...)

	for i := range scaleNodes {
		name := fmt.Sprintf("kwok-node-%d", i)
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
			Labels:      map[string]string{corev1.LabelHostname: name, "type": "kwok"}}}
		if _, err := kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			c.t.Fatal(err)
		}
	}
	c.until(60*time.Second, "kwok's nodes are ready", func() error {
		nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		ready := 0
		for _, n := range nodes.Items {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready < scaleNodes {
			return fmt.Errorf("%d of %d nodes ready", ready, scaleNodes)
		}
		return nil
	})
}

// scaleWatch follows the pool's children: their metadata until they all
// exist, and its pods throughout (the leaders need them).
type scaleWatch struct {
	children   map[string]cache.SharedIndexInformer
	stop       chan struct{}
	stopOnce   sync.Once
	mu         sync.Mutex
	ready      map[string]bool // pod name → ready
	onReadyPod func(partition int32, pod string)
}

func newScaleWatch(b *testing.B, cfg *rest.Config) *scaleWatch {
	w := &scaleWatch{children: map[string]cache.SharedIndexInformer{}, stop: make(chan struct{}), ready: map[string]bool{}}
	sel := func(o *metav1.ListOptions) { o.LabelSelector = controllers.LabelPool + "=" + scalePool }
	meta := metadatainformer.NewFilteredSharedInformerFactory(metadata.NewForConfigOrDie(cfg), 0, scaleNamespace, sel)
	for _, gvr := range []schema.GroupVersionResource{
		{Group: "apps", Version: "v1", Resource: "deployments"},
		{Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"},
		{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"},
		{Version: "v1", Resource: "configmaps"},
		{Version: "v1", Resource: "serviceaccounts"},
		{Version: "v1", Resource: "services"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	} {
		w.children[gvr.Resource] = meta.ForResource(gvr).Informer()
	}
	meta.Start(w.stop)
	b.Cleanup(w.stopChildren)

	pods := informers.NewSharedInformerFactoryWithOptions(kubernetes.NewForConfigOrDie(cfg), 0,
		informers.WithNamespace(scaleNamespace), informers.WithTweakListOptions(sel))
	podInformer := pods.Core().V1().Pods().Informer()
	update := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		ready := pod.Status.Phase == corev1.PodRunning && slices.ContainsFunc(pod.Status.Conditions, func(c corev1.PodCondition) bool {
			return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
		})
		w.mu.Lock()
		was := w.ready[pod.Name]
		w.ready[pod.Name] = ready
		claim := w.onReadyPod
		w.mu.Unlock()
		if ready && !was && claim != nil {
			if p, err := strconv.ParseInt(pod.Labels[controllers.LabelPartition], 10, 32); err == nil {
				claim(int32(p), pod.Name)
			}
		}
	}
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, obj any) { update(obj) },
		DeleteFunc: func(obj any) {
			if pod, ok := obj.(*corev1.Pod); ok {
				w.mu.Lock()
				delete(w.ready, pod.Name)
				w.mu.Unlock()
			}
		},
	}); err != nil {
		b.Fatal(err)
	}
	stopPods := make(chan struct{})
	pods.Start(stopPods)
	b.Cleanup(func() { close(stopPods) })
	return w
}

func (w *scaleWatch) setOnReadyPod(f func(partition int32, pod string)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onReadyPod = f
}

func (w *scaleWatch) stopChildren() { w.stopOnce.Do(func() { close(w.stop) }) }

func (w *scaleWatch) count(resource string) int {
	return len(w.children[resource].GetStore().ListKeys())
}

func (w *scaleWatch) childrenExist(partitions int32) bool {
	n := int(partitions)
	return w.count("deployments") == n && w.count("poddisruptionbudgets") == n && w.count("leases") == n &&
		w.count("configmaps") == 1 && w.count("serviceaccounts") == 1 && w.count("services") == 1 &&
		w.count("roles") == 1 && w.count("rolebindings") == 1
}

func (w *scaleWatch) readyPods() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, ready := range w.ready {
		if ready {
			n++
		}
	}
	return n
}

func (w *scaleWatch) summary(partitions int32) string {
	select {
	case <-w.stop:
		return fmt.Sprintf("every child exists, %d of %d pods ready", w.readyPods(), int(partitions)*scaleReplicas)
	default:
	}
	return fmt.Sprintf("deployments %d, budgets %d, leases %d of %d; pods ready %d",
		w.count("deployments"), w.count("poddisruptionbudgets"), w.count("leases"), partitions, w.readyPods())
}

// leaderSim plays the partitions' leaders: the first ready pod of a
// partition claims its Lease (as client-go's election does: read it, then
// write itself in as holder), then renews it every renewEvery with one
// write, client-go's fast path for a leader.
type leaderSim struct {
	ctx     context.Context
	client  kubernetes.Interface
	claims  chan claim
	due     chan int32
	mu      sync.Mutex
	leases  map[int32]*leaderLease
	claimed atomic.Int64
	// Counted from the first claim on.
	renewals, late, failures atomic.Int64
}

type claim struct {
	partition int32
	pod       string
}

type leaderLease struct {
	busy  atomic.Bool
	lease *coordinationv1.Lease // owned by whoever set busy
}

// leaderWorkers is how many renewals may be in flight at once, as many
// leaders would have.
const leaderWorkers = 64

func newLeaderSim(ctx context.Context, kube kubernetes.Interface, partitions int32) *leaderSim {
	s := &leaderSim{ctx: ctx, client: kube, claims: make(chan claim, 2*partitions), due: make(chan int32, partitions),
		leases: map[int32]*leaderLease{}}
	for range 8 {
		go s.claimLoop()
	}
	for range leaderWorkers {
		go s.renewLoop()
	}
	go s.schedule(partitions)
	return s
}

// claim is called for each pod that becomes ready.
func (s *leaderSim) claim(partition int32, pod string) {
	s.mu.Lock()
	_, ok := s.leases[partition]
	if !ok {
		s.leases[partition] = nil // being claimed
	}
	s.mu.Unlock()
	if !ok {
		s.claims <- claim{partition, pod}
	}
}

func (s *leaderSim) claimLoop() {
	for {
		var c claim
		select {
		case <-s.ctx.Done():
			return
		case c = <-s.claims:
		}
		name := fmt.Sprintf("%s-p%d", scalePool, c.partition)
		for s.ctx.Err() == nil {
			l, err := s.client.CoordinationV1().Leases(scaleNamespace).Get(s.ctx, name, metav1.GetOptions{})
			if err == nil {
				now := metav1.NewMicroTime(time.Now())
				l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds = &c.pod, ptr.To[int32](5)
				l.Spec.AcquireTime, l.Spec.RenewTime = &now, &now
				l, err = s.client.CoordinationV1().Leases(scaleNamespace).Update(s.ctx, l, metav1.UpdateOptions{})
			}
			if err == nil {
				s.mu.Lock()
				s.leases[c.partition] = &leaderLease{lease: l}
				s.mu.Unlock()
				s.claimed.Add(1)
				break
			}
			if !apierrors.IsConflict(err) {
				time.Sleep(renewEvery) // not created yet: the election retries every retry period
			}
		}
	}
}

// schedule hands each claimed Lease to the renewers once per renewEvery,
// spread over the period in 100 slots.
func (s *leaderSim) schedule(partitions int32) {
	const slots = 100
	tick := time.NewTicker(renewEvery / slots)
	defer tick.Stop()
	for slot := int32(0); ; slot = (slot + 1) % slots {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		for p := slot; p < partitions; p += slots {
			s.mu.Lock()
			l := s.leases[p]
			s.mu.Unlock()
			if l == nil {
				continue
			}
			if !l.busy.CompareAndSwap(false, true) {
				s.late.Add(1) // its previous renewal has not returned yet
				continue
			}
			select {
			case s.due <- p:
			case <-s.ctx.Done():
				return
			}
		}
	}
}

func (s *leaderSim) renewLoop() {
	for {
		var p int32
		select {
		case <-s.ctx.Done():
			return
		case p = <-s.due:
		}
		s.mu.Lock()
		l := s.leases[p]
		s.mu.Unlock()
		lease := l.lease.DeepCopy()
		lease.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now()))
		updated, err := s.client.CoordinationV1().Leases(scaleNamespace).Update(s.ctx, lease, metav1.UpdateOptions{})
		if err == nil {
			l.lease = updated
			s.renewals.Add(1)
		} else if s.ctx.Err() == nil {
			s.failures.Add(1)
			if fresh, err := s.client.CoordinationV1().Leases(scaleNamespace).Get(s.ctx, lease.Name, metav1.GetOptions{}); err == nil {
				l.lease = fresh
			}
		}
		l.busy.Store(false)
	}
}

func restConfig(t testing.TB, kubeconfig string) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = -1, 0 // no client-side limit: the API server's fairness decides
	return cfg
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// metrics maps each series of a Prometheus text exposition, as written
// (name{labels}), to its value.
type metrics map[string]float64

func parseMetrics(r io.Reader) (metrics, error) {
	m := metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

func scrape(url string) (metrics, error) {
	resp, err := http.Get(url) //nolint:gosec // the operator's local metrics
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseMetrics(resp.Body)
}

func mustScrape(t testing.TB, url string) metrics {
	t.Helper()
	m, err := scrape(url)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func apiMetrics(t testing.TB, kube kubernetes.Interface) metrics {
	t.Helper()
	raw, err := kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseMetrics(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sumWhere adds up the series of name whose labels contain every one of
// labels (each `key="value"`).
func sumWhere(m metrics, name string, labels ...string) float64 {
	total := 0.0
	for series, v := range m {
		if series != name && !strings.HasPrefix(series, name+"{") {
			continue
		}
		if !allIn(series, labels) {
			continue
		}
		total += v
	}
	return total
}

func allIn(series string, labels []string) bool {
	for _, l := range labels {
		if !strings.Contains(series, l) {
			return false
		}
	}
	return true
}

// apiWrites is the growth of the API server's write requests between two
// scrapes, by resource (and subresource).
func apiWrites(before, after metrics) map[string]float64 {
	out := map[string]float64{}
	label := func(series, name string) string {
		i := strings.Index(series, name+`="`)
		if i < 0 {
			return ""
		}
		rest := series[i+len(name)+2:]
		return rest[:strings.IndexByte(rest, '"')]
	}
	for series, v := range after {
		if !strings.HasPrefix(series, "apiserver_request_total{") {
			continue
		}
		switch label(series, "verb") {
		case "POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY":
		default:
			continue
		}
		key := label(series, "resource")
		if sub := label(series, "subresource"); sub != "" {
			key += "/" + sub
		}
		if d := v - before[series]; d > 0 {
			out[key] += d
		}
	}
	return out
}

// diffByLabel is the growth of name between two scrapes, by the value of
// one label.
func diffByLabel(before, after metrics, name, label string) map[string]float64 {
	out := map[string]float64{}
	for series, v := range after {
		if !strings.HasPrefix(series, name+"{") {
			continue
		}
		key := "?"
		if i := strings.Index(series, label+`="`); i >= 0 {
			rest := series[i+len(label)+2:]
			key = rest[:strings.IndexByte(rest, '"')]
		}
		if d := v - before[series]; d > 0 {
			out[key] += d
		}
	}
	return out
}

// auditCounts counts the audited requests (the operator's) received in
// [from, to) by verb and resource, only writes when writesOnly, and says
// when the last of them that created something was answered.
func auditCounts(t testing.TB, path string, from, to time.Time, writesOnly bool) (map[string]int, time.Time) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]int{}
	var lastCreate time.Time
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4<<20), 4<<20)
	for sc.Scan() {
		var ev struct {
			Verb     string           `json:"verb"`
			Received metav1.MicroTime `json:"requestReceivedTimestamp"`
			Answered metav1.MicroTime `json:"stageTimestamp"`
			Status   *struct {
				Code int `json:"code"`
			} `json:"responseStatus"`
			ObjectRef *struct {
				Resource    string `json:"resource"`
				Subresource string `json:"subresource"`
			} `json:"objectRef"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit log: %v", err)
		}
		if ev.Received.Time.Before(from) || !ev.Received.Time.Before(to) {
			continue
		}
		switch ev.Verb {
		case "get", "list", "watch":
			if writesOnly {
				continue
			}
		}
		key := ev.Verb
		if ev.ObjectRef != nil {
			key += " " + ev.ObjectRef.Resource
			if ev.ObjectRef.Subresource != "" {
				key += "/" + ev.ObjectRef.Subresource
			}
		}
		out[key]++
		if ev.Verb == "create" && ev.Status != nil && ev.Status.Code == http.StatusCreated && ev.Answered.After(lastCreate) {
			lastCreate = ev.Answered.Time
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out, lastCreate
}

// memory reads a process's peak and current resident set size.
func memory(t testing.TB, pid int) (peak, now int64) {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			peak = kb << 10
		case "VmRSS:":
			now = kb << 10
		}
	}
	return peak, now
}

// processCPU is the CPU time of this process and of every process it
// started, by command name.
func processCPU(t testing.TB) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // gone
		}
		s := string(raw)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		f := strings.Fields(s[end+2:])
		ppid, _ := strconv.Atoi(f[1])
		if pid != self && ppid != self {
			continue
		}
		name := s[open+1 : end]
		if pid == self {
			name = "bench"
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		out[name] += time.Duration(utime+stime) * time.Second / 100
	}
	return out
}

// machineCPU reads the machine's busy and total CPU time (/proc/stat).
func machineCPU(t testing.TB) [2]float64 {
	t.Helper()
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(strings.SplitN(string(raw), "\n", 2)[0])[1:]
	var busy, total float64
	for i, v := range f {
		n, _ := strconv.ParseFloat(v, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return [2]float64{busy, total}
}

func saveProfile(t testing.TB, url, path string) {
	resp, err := http.Get(url) //nolint:gosec // the operator's local pprof
	if err != nil {
		t.Logf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(path, raw, 0o644)
	}
	if err != nil {
		t.Logf("profile: %v", err)
	}
}

// cpuTime reads a process's user + system CPU time.
func cpuTime(t testing.TB, pid int) time.Duration {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}
