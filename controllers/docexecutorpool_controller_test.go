package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
	"github.com/docexec/docexec/controllers"
	"github.com/docexec/docexec/executor/config"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/pipeline"
	"github.com/docexec/docexec/internal/testenv"
	"github.com/docexec/docexec/manager"
)

// fixedTopics answers for topics without Kafka.
type fixedTopics struct {
	n       int32
	err     error
	problem string
	lag     map[int32]int64
}

func (f fixedTopics) Describe(context.Context, *docexecv1.DocExecutorPool) (controllers.TopicInfo, error) {
	return controllers.TopicInfo{Partitions: f.n, Problem: f.problem, Lag: f.lag}, f.err
}

// env is one test's namespace and a reconciler whose writes are counted.
type env struct {
	t      *testing.T
	ns     string
	r      *controllers.DocExecutorPoolReconciler
	writes atomic.Int64
}

func newEnv(t *testing.T, topics controllers.Topics) *env {
	testenv.NeedControlPlane(t)
	e := &env{t: t, ns: fmt.Sprintf("t%x", rand.Uint32())}
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}); err != nil {
		t.Fatal(err)
	}
	count := func() { e.writes.Add(1) }
	counting := interceptor.NewClient(k8s, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			count()
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			count()
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			count()
			return c.Patch(ctx, obj, patch, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			count()
			return c.Delete(ctx, obj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			count()
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			count()
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	})
	e.r = &controllers.DocExecutorPoolReconciler{Client: counting, Scheme: manager.Scheme(), Recorder: eventRecorder(t),
		DefaultImage: "docexec:test", Topics: topics}
	return e
}

// eventRecorder records events in the test control plane, as the
// operator's does.
func eventRecorder(t *testing.T) record.EventRecorder {
	cs, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		t.Fatal(err)
	}
	b := record.NewBroadcaster()
	t.Cleanup(b.Shutdown)
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	return b.NewRecorder(manager.Scheme(), corev1.EventSource{Component: "docexec-operator"})
}

// waitEvent waits for an event of the pool with reason whose message
// contains words, and returns its message. Events are written in the
// background.
func (e *env) waitEvent(p *docexecv1.DocExecutorPool, reason, words string) string {
	e.t.Helper()
	var seen []string
	for range 300 {
		var list corev1.EventList
		if err := k8s.List(context.Background(), &list, client.InNamespace(e.ns)); err != nil {
			e.t.Fatal(err)
		}
		seen = seen[:0]
		for _, ev := range list.Items {
			if ev.InvolvedObject.Name != p.Name || ev.InvolvedObject.Kind != "DocExecutorPool" {
				continue
			}
			seen = append(seen, ev.Reason+": "+ev.Message)
			if ev.Reason == reason && strings.Contains(ev.Message, words) {
				return ev.Message
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("no event %s saying %q on pool %s; its events: %q", reason, words, p.Name, seen)
	return ""
}

// checkDegraded fails the test unless the pool's Degraded condition is True
// with reason and a message that contains words.
func (e *env) checkDegraded(p *docexecv1.DocExecutorPool, reason, words string) {
	e.t.Helper()
	c := meta.FindStatusCondition(e.get(p).Status.Conditions, docexecv1.ConditionDegraded)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != reason || !strings.Contains(c.Message, words) {
		e.t.Fatalf("pool %s: Degraded %+v, want %s saying %q", p.Name, c, reason, words)
	}
}

func (e *env) pool(name string, mutate func(*docexecv1.DocExecutorPoolSpec)) *docexecv1.DocExecutorPool {
	e.t.Helper()
	p := testenv.Pool(name, e.ns, mutate)
	if err := k8s.Create(context.Background(), p); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// reconcile runs passes until one writes nothing (at most five).
func (e *env) reconcile(p *docexecv1.DocExecutorPool) {
	e.t.Helper()
	for range 5 {
		before := e.writes.Load()
		if _, err := e.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(p)}); err != nil {
			e.t.Fatal(err)
		}
		if e.writes.Load() == before {
			return
		}
	}
	e.t.Fatal("five reconcile passes in a row still wrote something")
}

// checkPassesWriteNothing runs passes reconcile passes of r over p and fails
// if they wrote anything; what names them in the failure.
func (e *env) checkPassesWriteNothing(r *controllers.DocExecutorPoolReconciler, p *docexecv1.DocExecutorPool, passes int, what string) {
	e.t.Helper()
	before := e.writes.Load()
	for range passes {
		if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(p)}); err != nil {
			e.t.Fatal(err)
		}
	}
	if n := e.writes.Load() - before; n != 0 {
		e.t.Fatalf("%s made %d writes", what, n)
	}
}

func (e *env) get(p *docexecv1.DocExecutorPool) *docexecv1.DocExecutorPool {
	e.t.Helper()
	var out docexecv1.DocExecutorPool
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), &out); err != nil {
		e.t.Fatal(err)
	}
	return &out
}

func (e *env) update(p *docexecv1.DocExecutorPool, mutate func(*docexecv1.DocExecutorPoolSpec)) {
	e.t.Helper()
	cur := e.get(p)
	mutate(&cur.Spec)
	if err := k8s.Update(context.Background(), cur); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) deployments(pool string) map[string]appsv1.Deployment {
	e.t.Helper()
	var list appsv1.DeploymentList
	if err := k8s.List(context.Background(), &list, client.InNamespace(e.ns), client.MatchingLabels{controllers.LabelPool: pool}); err != nil {
		e.t.Fatal(err)
	}
	out := map[string]appsv1.Deployment{}
	for _, d := range list.Items {
		out[d.Name] = d
	}
	return out
}

func names[T any](m map[string]T) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (e *env) mustGet(obj client.Object, name string) {
	e.t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: name}, obj); err != nil {
		e.t.Fatalf("%T %s: %v", obj, name, err)
	}
}

// mustGetOwned gets an object of the pool and fails unless the pool controls it.
func (e *env) mustGetOwned(obj client.Object, name string, p *docexecv1.DocExecutorPool) {
	e.t.Helper()
	e.mustGet(obj, name)
	ownedBy(e.t, obj, p)
}

// containerEnv is c's environment as the kubelet would set it, with the
// Secrets' keys that secret returns; a field of the pod is "pod-" and its
// path.
func containerEnv(c corev1.Container, secret func(*corev1.SecretKeySelector) string) map[string]string {
	env := map[string]string{}
	for _, v := range c.Env {
		switch {
		case v.ValueFrom != nil && v.ValueFrom.SecretKeyRef != nil:
			env[v.Name] = secret(v.ValueFrom.SecretKeyRef)
		case v.ValueFrom != nil && v.ValueFrom.FieldRef != nil:
			env[v.Name] = "pod-" + v.ValueFrom.FieldRef.FieldPath
		case v.ValueFrom == nil:
			env[v.Name] = v.Value
		}
	}
	return env
}

func ownedBy(t *testing.T, obj client.Object, p *docexecv1.DocExecutorPool) {
	t.Helper()
	ref := metav1.GetControllerOf(obj)
	if ref == nil || ref.UID != p.UID || ref.Kind != "DocExecutorPool" || !ptr.Deref(ref.BlockOwnerDeletion, false) {
		t.Fatalf("%T %s is not controlled by pool %s: %+v", obj, obj.GetName(), p.Name, ref)
	}
}

func TestAPoolGetsItsPartitionsAndEverythingTheyNeed(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 3})
	p := e.pool("docs", func(s *docexecv1.DocExecutorPoolSpec) {
		s.Redis.PasswordSecretRef = &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis"}, Key: "password"}
	})
	e.reconcile(p)
	p = e.get(p)

	deps := e.deployments("docs")
	if got := names(deps); !slices.Equal(got, []string{"docs-p0", "docs-p1", "docs-p2"}) {
		t.Fatalf("deployments %v, want one per partition of the topic", got)
	}
	d := deps["docs-p1"]
	ownedBy(t, &d, p)
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	if *d.Spec.Replicas != 2 || d.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue() != 0 || d.Spec.Strategy.RollingUpdate.MaxSurge.IntValue() != 1 {
		t.Errorf("replicas %d, strategy %+v: want 2 (the default) and surge-first", *d.Spec.Replicas, d.Spec.Strategy.RollingUpdate)
	}
	if c.Image != "docexec:test" || !slices.Equal(c.Args, []string{"executor", "--config", "/etc/docexec/config.yaml"}) {
		t.Errorf("container %s %v", c.Image, c.Args)
	}
	if !ptr.Deref(c.SecurityContext.ReadOnlyRootFilesystem, false) || !ptr.Deref(c.SecurityContext.RunAsNonRoot, false) ||
		!slices.Equal(c.SecurityContext.Capabilities.Drop, []corev1.Capability{"ALL"}) || pod.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod not hardened: %+v %+v", c.SecurityContext, pod.SecurityContext)
	}
	if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("probes are not on /healthz and /readyz")
	}
	if *pod.TerminationGracePeriodSeconds <= 20 {
		t.Errorf("termination grace %ds does not leave room for the 20 s shutdown", *pod.TerminationGracePeriodSeconds)
	}
	if pod.Affinity.PodAntiAffinity == nil {
		t.Error("replicas are not spread across nodes")
	}

	// The ConfigMap plus the pod's environment is a valid executor configuration.
	var cm corev1.ConfigMap
	e.mustGetOwned(&cm, "docs-config", p)
	cfg := e.executorConfig(c)
	if cfg.Partition != 1 || cfg.Pool != "docs" || cfg.Identity() != e.ns+"/docs" || cfg.Kafka.Group != "docexec-"+e.ns+"/docs" || cfg.Postgres.DSN != "postgres://from-secret-pg" || cfg.Redis.Password != "postgres://from-secret-redis" ||
		cfg.Leader.Lease != "docs-p1" || cfg.Leader.Namespace != "pod-metadata.namespace" || cfg.Leader.Identity != "pod-metadata.name" ||
		time.Duration(cfg.Leader.LeaseDuration) != 5*time.Second {
		t.Fatalf("executor configuration %+v", cfg)
	}
	if d.Spec.Template.Annotations[controllers.AnnotationConfig] == "" {
		t.Error("pods carry no config hash")
	}

	for i := range 3 {
		var pdb policyv1.PodDisruptionBudget
		e.mustGetOwned(&pdb, fmt.Sprintf("docs-p%d", i), p)
		if pdb.Spec.MinAvailable.IntValue() != 1 {
			t.Errorf("PDB keeps %v available, want 1", pdb.Spec.MinAvailable)
		}
		var l coordinationv1.Lease
		e.mustGetOwned(&l, fmt.Sprintf("docs-p%d", i), p)
	}
	var sa corev1.ServiceAccount
	e.mustGetOwned(&sa, "docs-executor", p)
	var role rbacv1.Role
	e.mustGetOwned(&role, "docs-executor", p)
	if len(role.Rules) != 1 || !slices.Equal(role.Rules[0].Resources, []string{"leases"}) ||
		!slices.Equal(role.Rules[0].ResourceNames, []string{"docs-p0", "docs-p1", "docs-p2"}) {
		t.Errorf("role rules %+v, want the pool's Leases only", role.Rules)
	}
	var rb rbacv1.RoleBinding
	e.mustGetOwned(&rb, "docs-executor", p)
	var svc corev1.Service
	e.mustGetOwned(&svc, "docs-metrics", p)

	st := p.Status
	if st.ObservedGeneration != p.Generation || st.Partitions != 3 || st.ReadyPartitions != 0 || len(st.PartitionStatuses) != 3 {
		t.Fatalf("status %+v", st)
	}
	for _, typ := range []string{docexecv1.ConditionReady, docexecv1.ConditionProgressing, docexecv1.ConditionDegraded} {
		c := meta.FindStatusCondition(st.Conditions, typ)
		if c == nil || c.ObservedGeneration != p.Generation {
			t.Fatalf("condition %s: %+v", typ, c)
		}
	}
	if !meta.IsStatusConditionFalse(st.Conditions, docexecv1.ConditionReady) {
		t.Error("Ready without a ready pod")
	}
}

func TestAReconcileWithNothingChangedWritesNothing(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 2})
	p := e.pool("idle", nil)
	e.reconcile(p)
	if e.writes.Load() == 0 {
		t.Fatal("the first passes wrote nothing")
	}
	e.checkPassesWriteNothing(e.r, p, 3, "three passes with nothing changed")
}

func TestEditingPartitionsAddsAndRemovesPartitions(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 8})
	p := e.pool("scaled", func(s *docexecv1.DocExecutorPoolSpec) { s.Partitions = ptr.To[int32](2) })
	e.reconcile(p)
	if got := names(e.deployments("scaled")); len(got) != 2 {
		t.Fatalf("deployments %v", got)
	}
	if c := meta.FindStatusCondition(e.get(p).Status.Conditions, docexecv1.ConditionDegraded); c == nil || c.Reason != "PartitionsNotCovered" {
		t.Fatalf("running 2 of 8 partitions: Degraded %+v, want PartitionsNotCovered", c)
	}
	if degraded, _ := operatorMetric(t, "docexec_pool_condition", map[string]string{"namespace": p.Namespace, "pool": "scaled", "condition": "Degraded"}); degraded != 1 {
		t.Fatalf("docexec_pool_condition of Degraded %v, want 1", degraded)
	}
	e.update(p, func(s *docexecv1.DocExecutorPoolSpec) { s.Partitions = ptr.To[int32](4) })
	e.reconcile(p)
	if got := names(e.deployments("scaled")); !slices.Equal(got, []string{"scaled-p0", "scaled-p1", "scaled-p2", "scaled-p3"}) {
		t.Fatalf("after scaling up: %v", got)
	}
	e.update(p, func(s *docexecv1.DocExecutorPoolSpec) { s.Partitions = ptr.To[int32](1) })
	e.reconcile(p)
	if got := names(e.deployments("scaled")); !slices.Equal(got, []string{"scaled-p0"}) {
		t.Fatalf("after scaling down: %v", got)
	}
	var pdb policyv1.PodDisruptionBudget
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: "scaled-p3"}, &pdb); err == nil {
		t.Fatal("the PDB of a removed partition is left")
	}
	var leases coordinationv1.LeaseList
	if err := k8s.List(context.Background(), &leases, client.InNamespace(e.ns)); err != nil || len(leases.Items) != 1 {
		t.Fatalf("%d leases (%v), want 1", len(leases.Items), err)
	}
	var role rbacv1.Role
	e.mustGet(&role, "scaled-executor")
	if !slices.Equal(role.Rules[0].ResourceNames, []string{"scaled-p0"}) {
		t.Fatalf("role still names %v", role.Rules[0].ResourceNames)
	}
	if st := e.get(p).Status; st.Partitions != 1 || len(st.PartitionStatuses) != 1 {
		t.Fatalf("status %+v", st)
	}
	for partition, want := range map[string]bool{"0": true, "1": false, "3": false} {
		if _, served := operatorMetric(t, "docexec_pool_partition_led", map[string]string{"namespace": p.Namespace, "pool": "scaled", "partition": partition}); served != want {
			t.Errorf("docexec_pool_partition_led of partition %s served: %v, want %v", partition, served, want)
		}
	}
	if err := k8s.Delete(context.Background(), e.get(p)); err != nil {
		t.Fatal(err)
	}
	e.reconcile(p)
	if _, served := operatorMetric(t, "docexec_pool_condition", map[string]string{"namespace": p.Namespace, "pool": "scaled"}); served {
		t.Error("a deleted pool's docexec_pool_condition is still served")
	}
}

func TestUnsetPartitionsFollowTheTopicAsItGrows(t *testing.T) {
	brokers := testenv.Kafka(t, 2, "grows")
	e := newEnv(t, &controllers.KafkaTopics{Remember: time.Nanosecond})
	p := e.pool("follow", func(s *docexecv1.DocExecutorPoolSpec) {
		s.Kafka.Brokers, s.Kafka.InputTopic = brokers, "grows"
	})
	e.reconcile(p)
	if got := names(e.deployments("follow")); len(got) != 2 {
		t.Fatalf("deployments %v, want the topic's 2", got)
	}
	res, err := e.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(p)})
	if err != nil || res.RequeueAfter <= 0 {
		t.Fatalf("a pool following its topic must come back: %+v, %v", res, err)
	}
	testenv.GrowTopic(t, brokers, "grows", 5)
	e.reconcile(p)
	if got := names(e.deployments("follow")); len(got) != 5 {
		t.Fatalf("deployments %v after the topic grew to 5", got)
	}
	if st := e.get(p).Status; st.TopicPartitions == nil || *st.TopicPartitions != 5 {
		t.Fatalf("status %+v", st)
	}
}

// TestTopicsThatCannotServeThePoolDegradeIt reads real topics: an output
// topic with fewer partitions than the input, then a missing dead-letter
// topic. The executors would exit at start; the pool says why.
func TestTopicsThatCannotServeThePoolDegradeIt(t *testing.T) {
	brokers := testenv.Kafka(t, 3, "updates")
	testenv.CreateTopic(t, brokers, "states", 2, nil)
	e := newEnv(t, &controllers.KafkaTopics{Remember: time.Nanosecond})
	p := e.pool("unfit", func(s *docexecv1.DocExecutorPoolSpec) { s.Kafka.Brokers = brokers })
	for _, want := range []string{
		`kafka.outputTopic: topic "states" has 2 partitions, fewer than the 3 of input topic "updates"`,
		`kafka.deadLetterTopic: topic "dead" does not exist`,
	} {
		e.reconcile(p)
		e.checkDegraded(p, "TopicsUnfit", want)
		testenv.GrowTopic(t, brokers, "states", 3) // fixed; the next problem shows
	}
	testenv.CreateTopic(t, brokers, "dead", 3, nil)
	e.reconcile(p)
	if c := meta.FindStatusCondition(e.get(p).Status.Conditions, docexecv1.ConditionDegraded); c == nil || c.Status != metav1.ConditionFalse {
		t.Fatalf("Degraded %+v once the topics are right", c)
	}
	// A missing input topic is no outage either, even for a pool whose
	// partition count is set.
	q := e.pool("no-input", func(s *docexecv1.DocExecutorPoolSpec) {
		s.Kafka.Brokers, s.Kafka.InputTopic, s.Partitions = brokers, "nope", ptr.To[int32](3)
	})
	e.reconcile(q)
	e.checkDegraded(q, "TopicsUnfit", `kafka.inputTopic: topic "nope" does not exist`)
}

// TestStatusShowsTheLagReadFromKafka commits an offset for the pool's group
// the way executors do (in a transaction) and reads the lag in status: the

// executorConfig loads the configuration an executor container of the
// env's pool "docs" gets: its ConfigMap plus its environment, with Secrets
// and pod fields stood in for.
func (e *env) executorConfig(c corev1.Container) config.Config {
	e.t.Helper()
	var cm corev1.ConfigMap
	e.mustGet(&cm, "docs-config")
	file := filepath.Join(e.t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(cm.Data["config.yaml"]), 0o600); err != nil {
		e.t.Fatal(err)
	}
	envOf := containerEnv(c, func(ref *corev1.SecretKeySelector) string {
		return "postgres://from-secret-" + ref.Name // parseable as a DSN, since the executor checks that one is
	})
	cfg, err := config.Load(append(slices.Clone(c.Args[1:]), "--config", file), func(k string) string { return envOf[k] })
	if err != nil {
		e.t.Fatalf("the pod's configuration does not load: %v\n%s", err, cm.Data["config.yaml"])
	}
	return cfg
}

// TestPoolsOfOneNameInTwoNamespacesShareNothing: two teams' pools "docs" on
// the same Redis, PostgreSQL and Kafka must not share keys, watermarks, a
// consumer group or transactional ids (which would fence each other).
func TestPoolsOfOneNameInTwoNamespacesShareNothing(t *testing.T) {
	var identities, groups, transactional []string
	for range 2 {
		e := newEnv(t, fixedTopics{n: 1})
		e.reconcile(e.pool("docs", nil))
		var d appsv1.Deployment
		e.mustGet(&d, "docs-p0")
		cfg := e.executorConfig(d.Spec.Template.Spec.Containers[0])
		identities = append(identities, cfg.Identity())
		groups = append(groups, cfg.Kafka.Group)
		transactional = append(transactional, kafka.TransactionalID(cfg.Identity(), cfg.Kafka.InputTopic, cfg.Partition))
	}
	for _, pair := range [][]string{identities, groups, transactional} {
		if pair[0] == pair[1] {
			t.Fatalf("two namespaces' pools share %q (identities %v)", pair[0], identities)
		}
	}
}

// API server carries no lag reports, Kafka already knows.
func TestStatusShowsTheLagReadFromKafka(t *testing.T) {
	brokers := testenv.Kafka(t, 2, "updates", "states", "dead")
	e := newEnv(t, &controllers.KafkaTopics{Remember: time.Nanosecond})
	p := e.pool("lagging", func(s *docexecv1.DocExecutorPoolSpec) { s.Kafka.Brokers = brokers })
	producer, err := kafka.NewProducer(kafka.Config{Brokers: brokers}, kafka.DefaultMaxMessageBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	msgs := make([]kafka.Message, 10)
	for i := range msgs {
		msgs[i] = kafka.Message{Topic: "updates", Key: []byte("same key"), Value: []byte("x")}
	}
	if err := producer.Send(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	client, err := kafka.Connect(kafka.Config{Brokers: brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	busy := int32(0) // the partition the key went to
	if end, _ := client.Offset("updates", 1, kafka.Latest); end == 10 {
		busy = 1
	}
	w, err := kafka.NewWriter(kafka.Config{Brokers: brokers}, kafka.WriterOptions{TransactionalID: "t", Group: config.Group(e.ns + "/lagging"), InputTopic: "updates", Partition: busy})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Publish(context.Background(), nil, 4); err != nil {
		t.Fatal(err)
	}
	e.reconcile(p)
	st := e.get(p).Status
	if lag := st.PartitionStatuses[busy].Lag; lag == nil || *lag != 6 {
		t.Fatalf("partition %d: lag %v, want 6 (10 messages, 4 committed)", busy, lag)
	}
	if lag := st.PartitionStatuses[1-busy].Lag; lag != nil {
		t.Fatalf("partition %d never committed, yet shows lag %d", 1-busy, *lag)
	}
	if st.MaxLag == nil || *st.MaxLag != 6 {
		t.Fatalf("max lag %v, want 6", st.MaxLag)
	}
}

func TestUnreachableKafkaIsExplainedAndChangesNothing(t *testing.T) {
	e := newEnv(t, fixedTopics{err: fmt.Errorf("dial tcp: connection refused")})
	p := e.pool("blind", nil)
	e.reconcile(p)
	if got := names(e.deployments("blind")); len(got) != 0 {
		t.Fatalf("deployments %v without a partition count", got)
	}
	e.checkDegraded(p, "KafkaUnreachable", "connection refused")
}

func TestPauseScalesToZeroAndKeepsEverythingElse(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 2})
	p := e.pool("napping", nil)
	e.reconcile(p)
	e.update(p, func(s *docexecv1.DocExecutorPoolSpec) { s.Paused = true })
	e.reconcile(p)
	deps := e.deployments("napping")
	if len(deps) != 2 {
		t.Fatalf("deployments %v", names(deps))
	}
	for _, d := range deps {
		if *d.Spec.Replicas != 0 {
			t.Fatalf("%s has %d replicas while paused", d.Name, *d.Spec.Replicas)
		}
	}
	if c := meta.FindStatusCondition(e.get(p).Status.Conditions, docexecv1.ConditionReady); c == nil || c.Reason != "Paused" {
		t.Fatalf("Ready %+v, want Paused", c)
	}
	e.update(p, func(s *docexecv1.DocExecutorPoolSpec) { s.Paused = false })
	e.reconcile(p)
	for _, d := range e.deployments("napping") {
		if *d.Spec.Replicas != 2 {
			t.Fatalf("%s has %d replicas after resuming", d.Name, *d.Spec.Replicas)
		}
	}
}

func TestAConfigurationChangeRollsThePods(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 1})
	p := e.pool("tuned", nil)
	e.reconcile(p)
	before := e.deployments("tuned")["tuned-p0"].Spec.Template.Annotations[controllers.AnnotationConfig]
	e.update(p, func(s *docexecv1.DocExecutorPoolSpec) { s.Sync.Interval = &metav1.Duration{Duration: 5 * time.Second} })
	e.reconcile(p)
	var cm corev1.ConfigMap
	e.mustGet(&cm, "tuned-config")
	if !strings.Contains(cm.Data["config.yaml"], "interval: 5s") {
		t.Fatalf("config not updated:\n%s", cm.Data["config.yaml"])
	}
	if after := e.deployments("tuned")["tuned-p0"].Spec.Template.Annotations[controllers.AnnotationConfig]; after == before {
		t.Fatal("the pod template did not change, so the pods would not roll")
	}
}

func TestAChangedSpecIsProgressingUntilItIsApplied(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 1})
	p := e.pool("rolling", nil)
	e.reconcile(p)
	for _, d := range e.deployments("rolling") { // as if rolled out
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2}
		if err := k8s.Status().Update(context.Background(), &d); err != nil {
			t.Fatal(err)
		}
	}
	e.reconcile(p)
	if !meta.IsStatusConditionFalse(e.get(p).Status.Conditions, docexecv1.ConditionProgressing) {
		t.Fatal("not stable after the rollout")
	}
	e.update(p, func(s *docexecv1.DocExecutorPoolSpec) { s.Image = "docexec:next" })
	// One pass: the status, written before the Deployment is updated, must
	// not call the new generation stable.
	if _, err := e.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(p)}); err != nil {
		t.Fatal(err)
	}
	got := e.get(p)
	c := meta.FindStatusCondition(got.Status.Conditions, docexecv1.ConditionProgressing)
	if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != got.Generation {
		t.Fatalf("Progressing %+v after changing the image", c)
	}
}

func TestStatusReportsReadyPartitionsLeadersAndLag(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 2, lag: map[int32]int64{1: 42}})
	p := e.pool("watched", nil)
	e.reconcile(p)
	// What the Deployment controller and the executors would report.
	for _, d := range e.deployments("watched") {
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2}
		if err := k8s.Status().Update(context.Background(), &d); err != nil {
			t.Fatal(err)
		}
	}
	// Ready pods without a leader do not serve their partition.
	e.reconcile(p)
	if st := e.get(p).Status; st.ReadyPartitions != 0 || st.Leaders != 0 || meta.IsStatusConditionTrue(st.Conditions, docexecv1.ConditionReady) {
		t.Fatalf("ready without leaders: %+v", st)
	}
	for _, partition := range []string{"0", "1"} {
		if led, ok := operatorMetric(t, "docexec_pool_partition_led", map[string]string{"namespace": p.Namespace, "pool": "watched", "partition": partition}); !ok || led != 0 {
			t.Fatalf("partition %s without a leader: docexec_pool_partition_led %v (served: %v), want 0", partition, led, ok)
		}
	}
	for i, holder := range []string{"watched-p0-xyz", "watched-p1-abc"} {
		var l coordinationv1.Lease
		e.mustGet(&l, fmt.Sprintf("watched-p%d", i))
		l.Spec.HolderIdentity = ptr.To(holder)
		if err := k8s.Update(context.Background(), &l); err != nil {
			t.Fatal(err)
		}
	}
	e.reconcile(p)
	st := e.get(p).Status
	if st.ReadyPartitions != 2 || st.ReadyReplicas != 4 || !meta.IsStatusConditionTrue(st.Conditions, docexecv1.ConditionReady) ||
		!meta.IsStatusConditionFalse(st.Conditions, docexecv1.ConditionProgressing) {
		t.Fatalf("status %+v", st)
	}
	ps := st.PartitionStatuses[1]
	if ps.Leader != "watched-p1-abc" || ps.Lag == nil || *ps.Lag != 42 {
		t.Fatalf("partition 1: %+v", ps)
	}
	if st.Leaders != 2 || st.MaxLag == nil || *st.MaxLag != 42 {
		t.Fatalf("leaders %d, max lag %v: want 2 and 42", st.Leaders, st.MaxLag)
	}
	for _, partition := range []string{"0", "1"} {
		if led, _ := operatorMetric(t, "docexec_pool_partition_led", map[string]string{"namespace": p.Namespace, "pool": "watched", "partition": partition}); led != 1 {
			t.Fatalf("partition %s led: docexec_pool_partition_led %v, want 1", partition, led)
		}
	}
	if ready, _ := operatorMetric(t, "docexec_pool_condition", map[string]string{"namespace": p.Namespace, "pool": "watched", "condition": "Ready"}); ready != 1 {
		t.Fatalf("docexec_pool_condition of Ready %v, want 1", ready)
	}
}

// operatorMetric returns the value of the series of the manager's registry
// (where the operator's metrics are served) that has name and labels.
func operatorMetric(t *testing.T, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue series
				}
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func TestInvalidSpecsAreRejectedWithTheirMessages(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 1})
	for _, c := range []struct {
		name   string
		mutate func(*docexecv1.DocExecutorPoolSpec)
		want   string
	}{
		{"brokers may not be empty", func(s *docexecv1.DocExecutorPoolSpec) { s.Kafka.Brokers = nil }, "brokers"},
		{"input and output topics differ", func(s *docexecv1.DocExecutorPoolSpec) { s.Kafka.OutputTopic = "updates" }, "kafka.outputTopic must differ from kafka.inputTopic"},
		{"partitions are at least 1 when set", func(s *docexecv1.DocExecutorPoolSpec) { s.Partitions = ptr.To[int32](0) }, "spec.partitions"},
		{"replicas per partition are 1 to 9", func(s *docexecv1.DocExecutorPoolSpec) { s.ReplicasPerPartition = 10 }, "spec.replicasPerPartition"},
		{"durations are positive", func(s *docexecv1.DocExecutorPoolSpec) { s.Sync.Interval = &metav1.Duration{Duration: -time.Second} }, "sync.interval must be positive"},
		{"a clean TTL is whole seconds", func(s *docexecv1.DocExecutorPoolSpec) {
			s.Redis.CleanTTL = &metav1.Duration{Duration: 500 * time.Millisecond}
		}, "redis.cleanTTL must be 0s (keep synced states) or at least 1s"},
		{"a lease is at least 2s", func(s *docexecv1.DocExecutorPoolSpec) {
			s.Failover.LeaseDuration = &metav1.Duration{Duration: time.Second}
		}, "failover.leaseDuration must be at least 2s"},
		{"a retry period is at least 200ms", func(s *docexecv1.DocExecutorPoolSpec) {
			s.Failover.RetryPeriod = &metav1.Duration{Duration: 100 * time.Millisecond}
		}, "failover.retryPeriod must be at least 200ms"},
		{"the renew deadline is shorter than the lease", func(s *docexecv1.DocExecutorPoolSpec) {
			s.Failover.LeaseDuration = &metav1.Duration{Duration: 2 * time.Second}
			s.Failover.RenewDeadline = &metav1.Duration{Duration: 3 * time.Second}
		}, "failover.renewDeadline must be shorter than failover.leaseDuration"},
		{"the format is json or protobuf", func(s *docexecv1.DocExecutorPoolSpec) { s.Kafka.Format = "xml" }, "spec.kafka.format"},
		{"the name fits in the names it is part of", nil, "the pool's name must be a DNS label of at most 50 characters"},
	} {
		t.Run(c.name, func(t *testing.T) {
			name := "bad"
			if c.mutate == nil {
				name = strings.Repeat("x", 51)
			}
			p := testenv.Pool(name, e.ns, c.mutate)
			err := k8s.Create(context.Background(), p)
			if err == nil {
				k8s.Delete(context.Background(), p) //nolint:errcheck
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("rejected with %q, want a message naming %q", err, c.want)
			}
		})
	}
}

func TestTheSchemaFillsInDefaults(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 1})
	p := e.get(e.pool("defaults", nil))
	s := p.Spec
	if s.ReplicasPerPartition != 2 || s.Kafka.Format != "json" || s.Kafka.StartOffset != "earliest" || s.Batch.Size != 500 || s.Batch.MaxBytes != pipeline.DefaultBatchBytes ||
		s.Sync.Interval.Duration != time.Second || s.Failover.LeaseDuration.Duration != 5*time.Second || s.Postgres.Table != "documents" {
		t.Fatalf("defaults not applied: %+v", s)
	}
}

func TestTheLeaderPodIsMarkedToBeRemovedLast(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 1})
	p := e.pool("ranked", nil)
	e.reconcile(p)
	labels := e.deployments("ranked")["ranked-p0"].Spec.Template.Labels
	for _, name := range []string{"ranked-p0-a", "ranked-p0-b"} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns, Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "executor", Image: "docexec:test"}}}}
		if err := k8s.Create(context.Background(), pod); err != nil {
			t.Fatal(err)
		}
	}
	cost := func(name string) string {
		var pod corev1.Pod
		e.mustGet(&pod, name)
		return pod.Annotations[controllers.AnnotationDeletionCost]
	}
	lead := func(holder string) {
		var l coordinationv1.Lease
		e.mustGet(&l, "ranked-p0")
		l.Spec.HolderIdentity = ptr.To(holder)
		if err := k8s.Update(context.Background(), &l); err != nil {
			t.Fatal(err)
		}
		e.reconcile(p)
	}
	lead("ranked-p0-a")
	if cost("ranked-p0-a") == "" || cost("ranked-p0-b") != "" {
		t.Fatalf("costs a=%q b=%q, want only the leader a marked", cost("ranked-p0-a"), cost("ranked-p0-b"))
	}
	lead("ranked-p0-b")
	if cost("ranked-p0-a") != "" || cost("ranked-p0-b") == "" {
		t.Fatalf("after the handover costs a=%q b=%q, want only b marked", cost("ranked-p0-a"), cost("ranked-p0-b"))
	}
}

// After kubectl delete dxp --cascade=orphan (the garbage collector strips
// the owner references), a pool created again takes its objects back.
func TestARecreatedPoolAdoptsItsOrphanedObjects(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 1})
	p := e.pool("phoenix", nil)
	e.reconcile(p)
	ctx := context.Background()
	orphan := func(obj client.Object, name string) {
		e.mustGet(obj, name)
		obj.SetOwnerReferences(nil)
		if err := k8s.Update(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range []struct {
		obj  client.Object
		name string
	}{
		{&appsv1.Deployment{}, "phoenix-p0"}, {&policyv1.PodDisruptionBudget{}, "phoenix-p0"}, {&corev1.ConfigMap{}, "phoenix-config"},
		{&corev1.ServiceAccount{}, "phoenix-executor"}, {&rbacv1.Role{}, "phoenix-executor"}, {&rbacv1.RoleBinding{}, "phoenix-executor"},
		{&corev1.Service{}, "phoenix-metrics"},
	} {
		orphan(o.obj, o.name)
	}
	var l coordinationv1.Lease
	orphan(&l, "phoenix-p0")
	l.Spec.HolderIdentity = ptr.To("phoenix-p0-pod")
	if err := k8s.Update(ctx, &l); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(ctx, e.get(p)); err != nil {
		t.Fatal(err)
	}
	p = e.pool("phoenix", nil)
	e.reconcile(p)
	p = e.get(p)
	var d appsv1.Deployment
	e.mustGetOwned(&d, "phoenix-p0", p)
	e.mustGetOwned(&l, "phoenix-p0", p)
	if ptr.Deref(l.Spec.HolderIdentity, "") != "phoenix-p0-pod" {
		t.Fatal("adopting the Lease erased its holder")
	}
	e.checkPassesWriteNothing(e.r, p, 1, "a pass after adoption")
}

func TestMorePartitionsThanTheTopicHasIsReported(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 2})
	p := e.pool("greedy", func(s *docexecv1.DocExecutorPoolSpec) { s.Partitions = ptr.To[int32](3) })
	e.reconcile(p)
	if c := meta.FindStatusCondition(e.get(p).Status.Conditions, docexecv1.ConditionDegraded); c == nil || c.Reason != "PartitionsMissing" {
		t.Fatalf("Degraded %+v, want PartitionsMissing", c)
	}
}

func TestExecutorPodsRunAsANumericNonRootUser(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 1})
	p := e.pool("users", nil)
	e.reconcile(p)
	sc := e.deployments("users")["users-p0"].Spec.Template.Spec.SecurityContext
	// runAsNonRoot alone fails (CreateContainerConfigError) on an image
	// whose user is a name or root: the pod names the uid itself.
	if ptr.Deref(sc.RunAsUser, 0) != 65532 || ptr.Deref(sc.RunAsGroup, 0) != 65532 || !ptr.Deref(sc.RunAsNonRoot, false) {
		t.Fatalf("pod security context %+v, want runAsNonRoot as 65532:65532", sc)
	}
	e.update(p, func(s *docexecv1.DocExecutorPoolSpec) {
		s.Pod.RunAsUser, s.Pod.RunAsGroup = ptr.To[int64](1000), ptr.To[int64](2000)
	})
	e.reconcile(p)
	sc = e.deployments("users")["users-p0"].Spec.Template.Spec.SecurityContext
	if ptr.Deref(sc.RunAsUser, 0) != 1000 || ptr.Deref(sc.RunAsGroup, 0) != 2000 {
		t.Fatalf("pod security context %+v, want the pool's 1000:2000", sc)
	}
	root := e.get(p)
	root.Spec.Pod.RunAsUser = ptr.To[int64](0)
	if err := k8s.Update(context.Background(), root); err == nil || !strings.Contains(err.Error(), "runAsUser") {
		t.Fatalf("runAsUser 0 was accepted (%v); runAsNonRoot forbids it", err)
	}
}

func TestAWriteConflictIsRetriedNotReportedAsAnError(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 1})
	p := e.pool("racy", nil)
	var conflicts atomic.Int64
	inner := e.r.Client
	e.r.Client = interceptor.NewClient(k8s, interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if conflicts.Add(1) == 1 { // someone else wrote the pool first
				return apierrors.NewConflict(docexecv1.GroupVersion.WithResource("docexecutorpools").GroupResource(), obj.GetName(), errors.New("the object has been modified"))
			}
			return inner.Status().Update(ctx, obj, opts...)
		},
	})
	res, err := e.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(p)})
	if err != nil || res.RequeueAfter <= 0 {
		t.Fatalf("a conflicting status write returned (%+v, %v), want a quiet requeue", res, err)
	}
	e.r.Client = inner
	e.reconcile(p)
	if e.get(p).Status.ObservedGeneration == 0 {
		t.Fatal("the retried pass wrote no status")
	}
}

func TestAPassWritesPartitionsConcurrentlyUpToTheLimit(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 12})
	p := e.pool("wide", nil)
	var inFlight, most atomic.Int64
	inner := e.r.Client
	e.r.ConcurrentWrites = 4
	e.r.Client = interceptor.NewClient(k8s, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(30 * time.Millisecond) // a busy API server
			return inner.Create(ctx, obj, opts...)
		},
	})
	e.reconcile(p)
	if got := most.Load(); got != 4 {
		t.Fatalf("at most %d creates were in flight at once, want ConcurrentWrites = 4", got)
	}
	var budgets policyv1.PodDisruptionBudgetList
	var leases coordinationv1.LeaseList
	for _, list := range []client.ObjectList{&budgets, &leases} {
		if err := k8s.List(context.Background(), list, client.InNamespace(e.ns)); err != nil {
			t.Fatal(err)
		}
	}
	if d := len(e.deployments("wide")); d != 12 || len(budgets.Items) != 12 || len(leases.Items) != 12 {
		t.Fatalf("%d deployments, %d budgets, %d leases: want 12 of each", d, len(budgets.Items), len(leases.Items))
	}
}

func TestAFailedWriteStopsThePassAndIsReported(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 40})
	p := e.pool("broken", nil)
	var creates atomic.Int64
	inner := e.r.Client
	e.r.Client = interceptor.NewClient(k8s, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			creates.Add(1)
			if obj.GetName() == "broken-p3" {
				return apierrors.NewForbidden(appsv1.Resource("deployments"), obj.GetName(), errors.New("quota exceeded"))
			}
			return inner.Create(ctx, obj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			return inner.Status().Update(ctx, obj, opts...)
		},
	})
	_, err := e.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(p)})
	if err == nil || !strings.Contains(err.Error(), "broken-p3") || !strings.Contains(err.Error(), "quota exceeded") {
		t.Fatalf("the pass returned %v, want the failed create of broken-p3", err)
	}
	// 5 shared objects and 3 per partition: a pass that went on would make 125.
	if n := creates.Load(); n >= 5+3*40 {
		t.Fatalf("%d creates: the pass went on after the failure", n)
	}
	e.checkDegraded(p, "ReconcileFailed", "broken-p3")
}

func TestTheStatusOfAPoolAtTheAPIMaximumIsAccepted(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 10000})
	// The longest name a pool may have: its pods' names are the longest.
	name := "p" + strings.Repeat("x", 49)
	p := e.pool(name, func(s *docexecv1.DocExecutorPoolSpec) { s.Partitions = ptr.To[int32](10000) })
	p = e.get(p)
	for i := range int32(10000) {
		p.Status.PartitionStatuses = append(p.Status.PartitionStatuses, docexecv1.PartitionStatus{
			Partition: i, ReadyReplicas: 9, Leader: fmt.Sprintf("%s-p%d-7d9f8c6b5d-x7k2q", name, i), Lag: ptr.To[int64](1 << 40),
		})
	}
	p.Status.Partitions, p.Status.ReadyPartitions = 10000, 10000
	start := time.Now()
	if err := k8s.Status().Update(context.Background(), p); err != nil {
		t.Fatalf("status of 10,000 partitions: %v", err)
	}
	var got unstructured.Unstructured
	got.SetGroupVersionKind(docexecv1.GroupVersion.WithKind("DocExecutorPool"))
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), &got); err != nil {
		t.Fatal(err)
	}
	raw, _ := got.MarshalJSON()
	// etcd refuses requests over 1.5 MiB by default.
	t.Logf("the pool is %d bytes; its status update took %v", len(raw), time.Since(start))
}

func TestAFailedStatusWriteDoesNotHoldBackThePartitions(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 3})
	p := e.pool("slow", nil)
	inner := e.r.Client
	e.r.Client = interceptor.NewClient(inner.(client.WithWatch), interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			return apierrors.NewTimeoutError("request did not complete within the allotted timeout", 0)
		},
	})
	_, err := e.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(p)})
	if !apierrors.IsTimeout(err) {
		t.Fatalf("the pass returned %v, want the status write's timeout", err)
	}
	if got := names(e.deployments("slow")); len(got) != 3 {
		t.Fatalf("deployments %v after a failed status write, want all 3 partitions", got)
	}
	e.r.Client = inner
	e.reconcile(p)
	if e.get(p).Status.Partitions != 3 {
		t.Fatal("the next pass wrote no status")
	}
}

func TestAnIdlePassReadsNoPartitionObjectOneByOne(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 5})
	p := e.pool("lean", nil)
	e.reconcile(p)
	var gets []string
	inner := e.r.Client
	e.r.Client = interceptor.NewClient(inner.(client.WithWatch), interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			gets = append(gets, fmt.Sprintf("%T %s", obj, key.Name))
			return c.Get(ctx, key, obj, opts...)
		},
	})
	if _, err := e.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(p)}); err != nil {
		t.Fatal(err)
	}
	// The pool, and the 5 shared objects; each partition's Deployment and
	// budget come from the pass's lists (with 10,000 partitions, 20,000
	// copies out of the cache a pass).
	if len(gets) != 6 {
		t.Fatalf("an idle pass read %d objects one by one, want the pool and its 5 shared objects: %v", len(gets), gets)
	}
}
