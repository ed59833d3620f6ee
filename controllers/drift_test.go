package controllers_test

import (
	"context"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/docexec/docexec/controllers"
	"github.com/docexec/docexec/manager"
)

// edit changes an object of the test's namespace by hand.
func (e *env) edit(obj client.Object, name string, change func()) {
	e.t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		e.mustGet(obj, name)
		change()
		return k8s.Update(context.Background(), obj)
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func TestHandEditsArePutBack(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 2})
	p := e.pool("kept", nil)
	e.reconcile(p)
	for _, c := range []struct {
		name string
		obj  client.Object
		key  string
		// edit changes the object; field reads what the edit changed.
		edit  func(client.Object)
		field func(client.Object) any
	}{
		{"a Deployment's image", &appsv1.Deployment{}, "kept-p0",
			func(o client.Object) { o.(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Image = "evil:latest" },
			func(o client.Object) any { return o.(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Image }},
		{"a Deployment's environment", &appsv1.Deployment{}, "kept-p1",
			func(o client.Object) {
				c := &o.(*appsv1.Deployment).Spec.Template.Spec.Containers[0]
				c.Env = append(c.Env, corev1.EnvVar{Name: "DEBUG", Value: "1"})
			},
			func(o client.Object) any { return o.(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Env }},
		{"a Deployment's replicas", &appsv1.Deployment{}, "kept-p1",
			func(o client.Object) { o.(*appsv1.Deployment).Spec.Replicas = ptr.To[int32](7) },
			func(o client.Object) any { return *o.(*appsv1.Deployment).Spec.Replicas }},
		{"the ConfigMap's data", &corev1.ConfigMap{}, "kept-config",
			func(o client.Object) { o.(*corev1.ConfigMap).Data["config.yaml"] += "\nlisten: :9999\n" },
			func(o client.Object) any { return o.(*corev1.ConfigMap).Data }},
		{"the Role's rules", &rbacv1.Role{}, "kept-executor",
			func(o client.Object) {
				r := o.(*rbacv1.Role)
				r.Rules = append(r.Rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}})
			},
			func(o client.Object) any { return o.(*rbacv1.Role).Rules }},
		{"the RoleBinding's subjects", &rbacv1.RoleBinding{}, "kept-executor",
			func(o client.Object) {
				rb := o.(*rbacv1.RoleBinding)
				rb.Subjects = append(rb.Subjects, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "default", Namespace: e.ns})
			},
			func(o client.Object) any { return o.(*rbacv1.RoleBinding).Subjects }},
		{"a PodDisruptionBudget", &policyv1.PodDisruptionBudget{}, "kept-p0",
			func(o client.Object) {
				o.(*policyv1.PodDisruptionBudget).Spec.MinAvailable = ptr.To(intstr.FromInt32(2))
			},
			func(o client.Object) any { return o.(*policyv1.PodDisruptionBudget).Spec.MinAvailable }},
		{"the metrics Service's ports", &corev1.Service{}, "kept-metrics",
			func(o client.Object) { o.(*corev1.Service).Spec.Ports[0].Port = 9999 },
			func(o client.Object) any { return o.(*corev1.Service).Spec.Ports }},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			e.mustGet(c.obj, c.key)
			want := c.field(c.obj)
			e.edit(c.obj, c.key, func() { c.edit(c.obj) })
			if equality.Semantic.DeepEqual(c.field(c.obj), want) {
				t.Fatal("the edit changed nothing")
			}
			before := e.writes.Load()
			e.reconcile(p)
			e.mustGet(c.obj, c.key)
			if got := c.field(c.obj); !equality.Semantic.DeepEqual(got, want) {
				t.Fatalf("after a pass: %+v, want %+v back", got, want)
			}
			if n := e.writes.Load() - before; n != 1 {
				t.Fatalf("putting one object back took %d writes, want 1", n)
			}
		})
	}
}

// An operator that starts (or takes over) has no memory of its writes: it
// takes the objects as they are, and writes nothing on an idle pool.
func TestANewOperatorWritesNothingOnAnIdlePool(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 3})
	p := e.pool("calm", nil)
	e.reconcile(p)
	fresh := &controllers.DocExecutorPoolReconciler{Client: e.r.Client, Scheme: manager.Scheme(), Recorder: e.r.Recorder,
		DefaultImage: e.r.DefaultImage, Topics: e.r.Topics}
	e.checkPassesWriteNothing(fresh, p, 2, "a new operator's passes over an idle pool")
	// And it puts back what is edited while it runs.
	var d appsv1.Deployment
	e.edit(&d, "calm-p2", func() { d.Spec.Template.Spec.Containers[0].Image = "evil:latest" })
	e.r = fresh
	e.reconcile(p)
	e.mustGet(&d, "calm-p2")
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "docexec:test" {
		t.Fatalf("image %s, want docexec:test back", img)
	}
	if !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "executor") {
		t.Fatal("the container lost its arguments")
	}
}
