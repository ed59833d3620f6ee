package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestTheHashesOfAPoolGoWithThePool(t *testing.T) {
	var w writtenHashes
	a, b := types.NamespacedName{Namespace: "ns", Name: "a"}, types.NamespacedName{Namespace: "ns", Name: "b"}
	cm := func(uid string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid)}, Data: map[string]string{"k": "v"}}
	}
	w.remember(a, cm("a1"))
	w.remember(a, cm("a2"))
	w.remember(b, cm("b1"))
	edited := cm("b1")
	edited.Data["k"] = "edited"
	if !w.drifted(b, edited) {
		t.Fatal("an edit of b's ConfigMap is not drift")
	}
	w.forgetPool(a)
	if len(w.m) != 1 {
		t.Fatalf("%d hashes left after pool a went, want b's 1", len(w.m))
	}
	if !w.drifted(b, edited) {
		t.Fatal("forgetting pool a forgot b's ConfigMap")
	}
}
