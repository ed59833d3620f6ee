package controllers

import (
	"maps"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Drift (a hand edit of an object the pool owns) is found by hashing what
// the API server stored when the operator last wrote the object, and
// comparing it with the hash of the object as the cache now shows it.
//
// Why not compare the object with what the operator wants: the API server
// fills in defaults (probe timeouts, pull policies, a Service's IP
// families), and mutating admission webhooks may change more (an image
// rewritten to a mirror); a comparison would see drift in every one and
// write forever, fighting the webhook. The stored form after our own write
// is, by definition, what our write produces, so its hash is the reference.
//
// Why not server-side apply: it corrects drift only when the operator
// sends the apply, and sending it for every object on every pass is 20,000
// requests a pass for 10,000 partitions. Finding drift needs a local
// comparison either way.
//
// Why in memory, not in an annotation: the stored form is known only after
// the write, so an annotation would cost a second write of every object
// created or changed (and a Deployment's generation bumps on annotation
// changes). The cost of memory: an operator that starts (or takes over
// leadership) takes the objects as they are as its reference, so an edit
// made while no operator ran is not put back until the spec changes; an
// edit while one runs is put back at once (the edit is a watch event).
type writtenHashes struct {
	mu sync.Mutex
	m  map[types.UID]written
}

type written struct {
	// pool owns the object: its entries go with it.
	pool types.NamespacedName
	// generation is the object's when hash was taken, for kinds whose
	// generation moves with every change of what is hashed: a pass skips
	// hashing those whose generation did not move.
	generation int64
	hash       string
}

// remember records obj of pool, as returned by the API server after our
// write.
func (w *writtenHashes) remember(pool types.NamespacedName, obj client.Object) {
	w.set(obj, written{pool: pool, generation: generationOf(obj), hash: specHash(managedContent(obj))})
}

func (w *writtenHashes) set(obj client.Object, e written) {
	if obj.GetUID() == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[types.UID]written{}
	}
	w.m[obj.GetUID()] = e
}

func (w *writtenHashes) forget(obj client.Object) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, obj.GetUID())
}

// forgetPool drops the entries of a pool that is gone (its objects go with
// it, deleted by the garbage collector, not by us).
func (w *writtenHashes) forgetPool(pool types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	maps.DeleteFunc(w.m, func(_ types.UID, e written) bool { return e.pool == pool })
}

// drifted reports whether obj (as observed; never changed here) differs
// from what the operator last wrote. An object not written by this process
// becomes the reference as it is.
func (w *writtenHashes) drifted(pool types.NamespacedName, obj client.Object) bool {
	w.mu.Lock()
	last, ok := w.m[obj.GetUID()]
	w.mu.Unlock()
	gen := generationOf(obj)
	if ok && gen != 0 && gen == last.generation {
		return false
	}
	hash := specHash(managedContent(obj))
	if !ok || hash == last.hash {
		w.set(obj, written{pool: pool, generation: gen, hash: hash})
		return false
	}
	return true
}

// generationOf is the generation of kinds whose generation moves whenever
// their spec does (a Deployment's also with its annotations); 0 for the
// others, which are hashed on every pass (there are five per pool).
func generationOf(obj client.Object) int64 {
	switch obj.(type) {
	case *appsv1.Deployment, *policyv1.PodDisruptionBudget:
		return obj.GetGeneration()
	}
	return 0
}

// managedContent is what the operator sets of an object, as stored: its
// labels and the kind's content. Annotations are left out: controllers
// write their own there (a Deployment's revision).
func managedContent(obj client.Object) any {
	type content struct {
		Labels map[string]string
		Body   []any
	}
	c := content{Labels: obj.GetLabels()}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		c.Body = []any{o.Spec}
	case *policyv1.PodDisruptionBudget:
		c.Body = []any{o.Spec}
	case *corev1.ConfigMap:
		c.Body = []any{o.Data, o.BinaryData}
	case *corev1.Service:
		c.Body = []any{o.Spec}
	case *corev1.ServiceAccount:
		c.Body = []any{o.AutomountServiceAccountToken, o.ImagePullSecrets}
	case *rbacv1.Role:
		c.Body = []any{o.Rules}
	case *rbacv1.RoleBinding:
		c.Body = []any{o.RoleRef, o.Subjects}
	}
	return c
}
