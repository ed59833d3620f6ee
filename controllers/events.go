package controllers

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
)

// poolEvent is one event to record on a pool.
type poolEvent struct {
	typ, reason, message string
}

// namedInEvent bounds the partitions an event names: a rollout of 10,000
// partitions changes every leader, and one event per pass says so.
const namedInEvent = 5

// statusEvents are what a person wants to hear of a status change: leaders
// changed or lost, paused or resumed, Degraded reasons. Derived from the
// status written, not from the pass's actions, so that a pass that meets
// the same state again records nothing.
func statusEvents(before, after docexecv1.DocExecutorPoolStatus) []poolEvent {
	var out []poolEvent
	was := map[int32]string{}
	for _, ps := range before.PartitionStatuses {
		was[ps.Partition] = ps.Leader
	}
	var changed, lost []string
	for _, ps := range after.PartitionStatuses {
		prev, known := was[ps.Partition]
		switch {
		case !known || prev == ps.Leader:
		case ps.Leader == "":
			lost = append(lost, fmt.Sprintf("%d (was %s)", ps.Partition, prev))
		default:
			changed = append(changed, fmt.Sprintf("%d: %s", ps.Partition, ps.Leader))
		}
	}
	if len(changed) > 0 {
		out = append(out, poolEvent{corev1.EventTypeNormal, docexecv1.EventLeaderChanged, "New leader of partition " + listed(changed)})
	}
	if len(lost) > 0 {
		out = append(out, poolEvent{corev1.EventTypeWarning, docexecv1.EventPartitionWithoutLeader, "No leader for partition " + listed(lost)})
	}

	paused := func(st docexecv1.DocExecutorPoolStatus) bool {
		c := meta.FindStatusCondition(st.Conditions, docexecv1.ConditionReady)
		return c != nil && c.Reason == docexecv1.ReasonPaused
	}
	switch {
	case paused(after) && !paused(before):
		out = append(out, poolEvent{corev1.EventTypeNormal, docexecv1.EventPaused, "Paused: every partition scales to zero pods"})
	case !paused(after) && paused(before):
		out = append(out, poolEvent{corev1.EventTypeNormal, docexecv1.EventResumed, "Resumed: every partition scales back to its replicas"})
	}

	prev := meta.FindStatusCondition(before.Conditions, docexecv1.ConditionDegraded)
	cur := meta.FindStatusCondition(after.Conditions, docexecv1.ConditionDegraded)
	switch {
	case cur == nil:
	case cur.Status == metav1.ConditionTrue && (prev == nil || prev.Status != cur.Status || prev.Reason != cur.Reason || prev.Message != cur.Message):
		out = append(out, poolEvent{corev1.EventTypeWarning, cur.Reason, cur.Message})
	case cur.Status == metav1.ConditionFalse && prev != nil && prev.Status == metav1.ConditionTrue:
		out = append(out, poolEvent{corev1.EventTypeNormal, docexecv1.EventRecovered, "No longer degraded (was " + prev.Reason + ")"})
	}
	return out
}

// listed joins items, naming at most namedInEvent of them.
func listed(items []string) string {
	if len(items) <= namedInEvent {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:namedInEvent], ", "), len(items)-namedInEvent)
}
