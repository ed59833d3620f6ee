package controllers

import (
	"fmt"
	"reflect"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
)

// claim is what a pool may do with an existing object of the name it needs.
type claim int

const (
	// claimOurs: the pool controls it.
	claimOurs claim = iota
	// claimAdoptable: no controller, and the operator's labels for this
	// pool: an object of the pool orphaned by `kubectl delete
	// --cascade=orphan`, or made for the pool on purpose.
	claimAdoptable
	// claimTheirs: anything else. The operator never writes it: an
	// unrelated `<pool>-executor` ServiceAccount may be bound to wide
	// rights, and taking it over would hand them to the executors.
	claimTheirs
)

func claimOf(obj client.Object, pool *docexecv1.DocExecutorPool) claim {
	switch ref := metav1.GetControllerOf(obj); {
	case ref != nil && ref.UID == pool.UID:
		return claimOurs
	case ref != nil:
		return claimTheirs
	}
	l := obj.GetLabels()
	if l[LabelPool] == pool.Name && l["app.kubernetes.io/managed-by"] == managedBy {
		return claimAdoptable
	}
	return claimTheirs
}

// conflictError is an object the pool needs that is not the pool's. It is
// reported in status, not returned as a reconcile error: retrying cannot
// resolve it, a person must.
type conflictError struct {
	kind, name string
}

func newConflict(obj client.Object) *conflictError {
	return &conflictError{kind: kindOf(obj), name: obj.GetName()}
}

func (c *conflictError) Error() string { return fmt.Sprintf("%s %s", c.kind, c.name) }

// kindOf names an object's kind from its Go type (typed objects read from
// the API carry no TypeMeta).
func kindOf(obj client.Object) string {
	return reflect.TypeOf(obj).Elem().Name()
}
