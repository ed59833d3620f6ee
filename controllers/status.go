package controllers

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
)

// outcome is what a pass's writes ran into.
type outcome struct {
	// conflicts name the objects the pool needs that exist and are not its
	// own, left untouched, sorted.
	conflicts []string
	// blocked says the conflicts kept the pass from writing the partitions'
	// objects (the executors' configuration or identity is not the pool's).
	blocked bool
	// err is the write that failed, if one did.
	err error
}

// buildStatus rebuilds a pool's status from what exists and what the pass
// ran into, never from the status it had (only conditions' transition times
// carry over). Built from the same inputs it is the same status, so a pass
// that meets the same problem again writes nothing: no watch event, no
// hot loop.
func buildStatus(pool *docexecv1.DocExecutorPool, want wanted, o observed, hashes []string, out outcome) docexecv1.DocExecutorPoolStatus {
	st := docexecv1.DocExecutorPoolStatus{
		ObservedGeneration: pool.Generation,
		TopicPartitions:    want.topic,
		Conditions:         append([]metav1.Condition(nil), pool.Status.Conditions...),
	}
	count := max(want.count, 0)
	st.Partitions = count
	replicas := pool.Spec.ReplicasPerPartition
	if pool.Spec.Paused {
		replicas = 0
	}
	progressing := []string{}
	for p := range count {
		ps := docexecv1.PartitionStatus{Partition: p}
		dep, ok := o.deployments[p]
		switch {
		case !ok:
			progressing = append(progressing, fmt.Sprintf("partition %d is being created", p))
		default:
			ps.ReadyReplicas = dep.Status.ReadyReplicas
			st.Replicas += dep.Status.Replicas
			st.ReadyReplicas += dep.Status.ReadyReplicas
			if dep.Annotations[AnnotationHash] != hashes[p] || dep.Status.ObservedGeneration < dep.Generation || dep.Status.UpdatedReplicas < replicas ||
				dep.Status.Replicas != replicas || (dep.Spec.Replicas != nil && *dep.Spec.Replicas != replicas) {
				progressing = append(progressing, fmt.Sprintf("partition %d is rolling out", p))
			}
		}
		if l, ok := o.leases[p]; ok && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
			ps.Leader = *l.Spec.HolderIdentity
			st.Leaders++
		}
		if lag, ok := want.info.Lag[p]; ok {
			ps.Lag = &lag
			if st.MaxLag == nil || lag > *st.MaxLag {
				st.MaxLag = ptr.To(lag)
			}
		}
		// A partition is served when a ready pod leads it.
		if ps.ReadyReplicas > 0 && ps.Leader != "" {
			st.ReadyPartitions++
		}
		st.PartitionStatuses = append(st.PartitionStatuses, ps)
	}
	var removed []int32
	for p := range o.deployments {
		if p >= count && want.count >= 0 {
			removed = append(removed, p)
		}
	}
	slices.Sort(removed)
	for _, p := range removed {
		progressing = append(progressing, fmt.Sprintf("partition %d is being removed", p))
	}

	set := func(typ string, ok bool, reason, msg string) {
		setCondition(&st, pool.Generation, typ, ok, reason, msg)
	}
	switch {
	case pool.Spec.Paused:
		set(docexecv1.ConditionReady, false, docexecv1.ReasonPaused, "The pool is paused: every partition runs zero pods")
	case count > 0 && st.ReadyPartitions == count:
		set(docexecv1.ConditionReady, true, docexecv1.ReasonAllPartitionsReady, fmt.Sprintf("All %d partitions have a ready leader", count))
	default:
		set(docexecv1.ConditionReady, false, docexecv1.ReasonPartitionsNotReady, fmt.Sprintf("%d of %d partitions have a ready leader", st.ReadyPartitions, count))
	}
	if len(progressing) > 0 {
		set(docexecv1.ConditionProgressing, true, docexecv1.ReasonRollingOut, progressing[0])
	} else {
		set(docexecv1.ConditionProgressing, false, docexecv1.ReasonStable, "Every partition runs the current spec")
	}
	switch {
	case len(out.conflicts) > 0:
		msg := "Left untouched, not the pool's (another controller, or not labelled " + LabelPool + "=" + pool.Name + " and app.kubernetes.io/managed-by=" + managedBy + "): " +
			strings.Join(out.conflicts, ", ") + "; delete or rename them"
		if out.blocked {
			msg += ". Until then the partitions are left as they are: the executors would run with configuration or rights that are not the pool's"
		}
		set(docexecv1.ConditionDegraded, true, docexecv1.ReasonOwnershipConflict, msg)
	case out.err != nil:
		set(docexecv1.ConditionDegraded, true, docexecv1.ReasonReconcileFailed, out.err.Error())
	case want.info.Problem != "":
		set(docexecv1.ConditionDegraded, true, docexecv1.ReasonTopicsUnfit, "Executors exit at start: "+want.info.Problem)
	case want.err != nil && pool.Spec.Partitions == nil:
		set(docexecv1.ConditionDegraded, true, docexecv1.ReasonKafkaUnreachable, fmt.Sprintf("The partitions of topic %s cannot be read, so the pool cannot follow it: %v", pool.Spec.Kafka.InputTopic, want.err))
	case want.topic != nil && count > *want.topic:
		set(docexecv1.ConditionDegraded, true, docexecv1.ReasonPartitionsMissing, fmt.Sprintf("The pool runs %d partitions; topic %s has only %d, so executors of the others cannot start", count, pool.Spec.Kafka.InputTopic, *want.topic))
	case want.topic != nil && count < *want.topic:
		set(docexecv1.ConditionDegraded, true, docexecv1.ReasonPartitionsNotCovered, fmt.Sprintf("The pool runs %d partitions; topic %s has %d, whose updates nobody processes", count, pool.Spec.Kafka.InputTopic, *want.topic))
	default:
		set(docexecv1.ConditionDegraded, false, docexecv1.ReasonAsExpected, "Every partition of the topic is covered")
	}
	return st
}

// setCondition sets one condition, stamped with the generation it describes
// (its transition time moves only when its status does).
func setCondition(st *docexecv1.DocExecutorPoolStatus, generation int64, typ string, ok bool, reason, msg string) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: generation})
}
