package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
	"github.com/docexec/docexec/controllers"
	"github.com/docexec/docexec/manager"
)

func otherController() []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "other", UID: "0ther", Controller: ptr.To(true)}}
}

func TestObjectsThatAreNotThePoolsAreLeftAlone(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 2})
	labelsOfPool := func(pool string) map[string]string {
		return map[string]string{controllers.LabelPool: pool, "app.kubernetes.io/managed-by": "docexec-operator"}
	}
	for _, c := range []struct {
		name string
		// theirs makes the object in the way of pool "<name>".
		theirs func(pool string) client.Object
		// blocks: the executors would run with it, so no partition is made.
		blocks bool
	}{
		{"a ConfigMap without the pool's labels", func(pool string) client.Object {
			return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: pool + "-config"}, Data: map[string]string{"mine": "yes"}}
		}, true},
		{"a ConfigMap with the pool's labels and another controller", func(pool string) client.Object {
			return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: pool + "-config", Labels: labelsOfPool(pool), OwnerReferences: otherController()}}
		}, true},
		{"a ServiceAccount that may be bound to wide rights", func(pool string) client.Object {
			return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: pool + "-executor", Labels: map[string]string{"team": "payments"}}}
		}, true},
		{"a Role of wide rights", func(pool string) client.Object {
			return &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: pool + "-executor"},
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}}}
		}, true},
		{"a RoleBinding to a cluster role", func(pool string) client.Object {
			return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: pool + "-executor"},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "admin"},
				Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "someone", Namespace: e.ns}}}
		}, true},
		{"a Service that is not headless", func(pool string) client.Object {
			return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: pool + "-metrics"},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
		}, false},
		{"a Deployment of another app", func(pool string) client.Object {
			labels := map[string]string{"app": "web"}
			return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: pool + "-p0"}, Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}}}}}
		}, false},
		{"a PodDisruptionBudget of another app", func(pool string) client.Object {
			return &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: pool + "-p1"}, Spec: policyv1.PodDisruptionBudgetSpec{
				MaxUnavailable: ptr.To(intstr.FromInt32(3)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
		}, false},
		{"a Lease of another election", func(pool string) client.Object {
			return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: pool + "-p0"}, Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("web-1")}}
		}, false},
		{"a Lease with the pool's label but not the operator's", func(pool string) client.Object {
			return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: pool + "-p1", Labels: map[string]string{controllers.LabelPool: pool, controllers.LabelPartition: "1"}},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("web-1")}}
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			ctx := context.Background()
			name := fmt.Sprintf("c%x", time.Now().UnixNano()%0xffffff)
			theirs := c.theirs(name)
			theirs.SetNamespace(e.ns)
			if err := k8s.Create(ctx, theirs); err != nil {
				t.Fatal(err)
			}
			rv := theirs.GetResourceVersion()
			p := e.pool(name, nil)
			e.reconcile(p) // passes until one writes nothing: no flip-flop
			res, err := e.r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(p)})
			if err != nil || res.RequeueAfter <= 0 {
				t.Fatalf("a pass returned (%+v, %v), want no error and the resync: retrying cannot resolve a conflict", res, err)
			}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(theirs), theirs); err != nil || theirs.GetResourceVersion() != rv {
				t.Fatalf("their %T was written (%v)", theirs, err)
			}
			kindName := fmt.Sprintf("%s %s", strings.TrimPrefix(fmt.Sprintf("%T", theirs), "*v1."), theirs.GetName())
			e.checkDegraded(p, docexecv1.ReasonOwnershipConflict, kindName)
			e.waitEvent(p, docexecv1.ReasonOwnershipConflict, kindName)
			deps := e.deployments(name)
			switch {
			case c.blocks && len(deps) != 0:
				t.Fatalf("deployments %v were made: their pods would run with %s", names(deps), kindName)
			case c.blocks:
				var rb rbacv1.RoleBinding
				err := k8s.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: name + "-executor"}, &rb)
				if err == nil && metav1.IsControlledBy(&rb, e.get(p)) {
					t.Fatal("the pool's RoleBinding was made: it would grant a Role or to a ServiceAccount that is not the pool's")
				}
			case len(deps) == 0:
				t.Fatalf("no partition was made, yet %s does not concern the executors", kindName)
			}

			// Resolved by a person: the pool takes its name back.
			if err := k8s.Delete(ctx, theirs); err != nil {
				t.Fatal(err)
			}
			e.reconcile(p)
			if cond := meta.FindStatusCondition(e.get(p).Status.Conditions, docexecv1.ConditionDegraded); cond == nil || cond.Status != metav1.ConditionFalse {
				t.Fatalf("Degraded %+v once the object is gone", cond)
			}
			e.waitEvent(p, docexecv1.EventRecovered, docexecv1.ReasonOwnershipConflict)
			if got := len(e.deployments(name)); got != 2 {
				t.Fatalf("%d deployments once resolved, want 2", got)
			}
		})
	}
}

// TestAnUnresolvableConflictNeitherFlipsNorLoops runs the controller as the
// operator does. A pool whose metrics Service is someone else's ClusterIP
// Service (which cannot become headless) once made ~1,000 reconcile errors
// in 10 s, Degraded flipping at each.
func TestAnUnresolvableConflictNeitherFlipsNorLoops(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme: manager.Scheme(), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache:      cache.Options{DefaultNamespaces: map[string]cache.Config{e.ns: {}}},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	passes := &countingTopics{Topics: fixedTopics{n: 1}}
	r := &controllers.DocExecutorPoolReconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Recorder: mgr.GetEventRecorderFor("docexec-operator"),
		DefaultImage: "docexec:test", Topics: passes, Resync: time.Hour}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() { cancel(); <-done }()

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "stuck-metrics", Namespace: e.ns},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	if err := k8s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	p := e.pool("stuck", nil)
	var first *metav1.Condition
	for range 300 {
		first = meta.FindStatusCondition(e.get(p).Status.Conditions, docexecv1.ConditionDegraded)
		if first != nil && first.Reason == docexecv1.ReasonOwnershipConflict && len(e.deployments("stuck")) == 1 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if first == nil || first.Reason != docexecv1.ReasonOwnershipConflict {
		t.Fatalf("Degraded %+v, want OwnershipConflict", first)
	}
	// A window to loop in. Passes come from the objects the pool made (one
	// event each, at most); a loop would make hundreds. A slow machine only
	// makes fewer.
	time.Sleep(3 * time.Second)
	if n := passes.n.Load(); n > 15 {
		t.Fatalf("%d reconciles for one pool of one partition: the conflict loops", n)
	}
	last := meta.FindStatusCondition(e.get(p).Status.Conditions, docexecv1.ConditionDegraded)
	if last.Reason != first.Reason || !last.LastTransitionTime.Equal(&first.LastTransitionTime) || last.Status != metav1.ConditionTrue {
		t.Fatalf("Degraded moved from %+v to %+v", first, last)
	}
	t.Logf("%d reconciles", passes.n.Load())
}

// countingTopics counts the passes: each reads the topics once.
type countingTopics struct {
	controllers.Topics
	n atomic.Int64
}

func (c *countingTopics) Describe(ctx context.Context, p *docexecv1.DocExecutorPool) (controllers.TopicInfo, error) {
	c.n.Add(1)
	return c.Topics.Describe(ctx, p)
}

func TestThePoolTellsWhatAPersonWantsToKnowInEvents(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 3})
	p := e.pool("told", func(s *docexecv1.DocExecutorPoolSpec) { s.Partitions = ptr.To[int32](2) })
	e.reconcile(p)
	e.waitEvent(p, docexecv1.EventPartitionsScaled, "Scaled from 0 to 2 partitions")
	e.waitEvent(p, docexecv1.ReasonPartitionsNotCovered, "runs 2 partitions; topic updates has 3")

	lead := func(partition, holder string) {
		var l coordinationv1.Lease
		e.edit(&l, "told-p"+partition, func() { l.Spec.HolderIdentity = ptr.To(holder) })
	}
	lead("0", "told-p0-a")
	e.reconcile(p)
	e.waitEvent(p, docexecv1.EventLeaderChanged, "partition 0: told-p0-a")
	lead("0", "told-p0-b")
	e.reconcile(p)
	e.waitEvent(p, docexecv1.EventLeaderChanged, "partition 0: told-p0-b")
	lead("0", "")
	e.reconcile(p)
	e.waitEvent(p, docexecv1.EventPartitionWithoutLeader, "partition 0 (was told-p0-b)")

	e.update(p, func(s *docexecv1.DocExecutorPoolSpec) { s.Partitions = ptr.To[int32](3) })
	e.reconcile(p)
	e.waitEvent(p, docexecv1.EventPartitionsScaled, "Scaled from 2 to 3 partitions")
	e.waitEvent(p, docexecv1.EventRecovered, "was PartitionsNotCovered")

	e.update(p, func(s *docexecv1.DocExecutorPoolSpec) { s.Paused = true })
	e.reconcile(p)
	e.waitEvent(p, docexecv1.EventPaused, "zero pods")
	e.update(p, func(s *docexecv1.DocExecutorPoolSpec) { s.Paused = false })
	e.reconcile(p)
	e.waitEvent(p, docexecv1.EventResumed, "back to its replicas")
}
