package controllers

import (
	"errors"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
)

// statusCase is a pool of two partitions whose Deployments run the wanted
// spec with two ready replicas each, leaders elected, and a topic of two
// partitions, unless mutate says otherwise.
type statusCase struct {
	name   string
	mutate func(*docexecv1.DocExecutorPool, *wanted, *observed, *outcome)
	// want: condition type -> "Status/Reason", and words the Degraded
	// message must contain.
	want     map[string]string
	degraded []string
}

func TestStatusIsComputedFromWhatIsObservedAndWhatThePassRanInto(t *testing.T) {
	for _, c := range []statusCase{
		{name: "everything runs",
			want: map[string]string{docexecv1.ConditionReady: "True/AllPartitionsReady", docexecv1.ConditionProgressing: "False/Stable", docexecv1.ConditionDegraded: "False/AsExpected"}},
		{name: "a partition without a leader is not ready",
			mutate: func(_ *docexecv1.DocExecutorPool, _ *wanted, o *observed, _ *outcome) {
				o.leases[1].Spec.HolderIdentity = nil
			},
			want: map[string]string{docexecv1.ConditionReady: "False/PartitionsNotReady"}},
		{name: "paused",
			mutate: func(p *docexecv1.DocExecutorPool, _ *wanted, _ *observed, _ *outcome) { p.Spec.Paused = true },
			want:   map[string]string{docexecv1.ConditionReady: "False/Paused", docexecv1.ConditionProgressing: "True/RollingOut"}},
		{name: "a missing partition is progressing",
			mutate: func(_ *docexecv1.DocExecutorPool, _ *wanted, o *observed, _ *outcome) { delete(o.deployments, 1) },
			want:   map[string]string{docexecv1.ConditionProgressing: "True/RollingOut", docexecv1.ConditionReady: "False/PartitionsNotReady"}},
		{name: "objects of others are named, and say whether they hold the partitions back",
			mutate: func(_ *docexecv1.DocExecutorPool, w *wanted, _ *observed, out *outcome) {
				out.conflicts, out.blocked, out.err = []string{"ConfigMap docs-config", "Service docs-metrics"}, true, errors.New("later")
				w.info.Problem = "also later"
			},
			want:     map[string]string{docexecv1.ConditionDegraded: "True/OwnershipConflict"},
			degraded: []string{"ConfigMap docs-config, Service docs-metrics", "partitions are left as they are"}},
		{name: "a failed write comes before the topics",
			mutate: func(_ *docexecv1.DocExecutorPool, w *wanted, _ *observed, out *outcome) {
				out.err, w.info.Problem = errors.New("create Deployment docs-p1: quota exceeded"), "topic dead is missing"
			},
			want: map[string]string{docexecv1.ConditionDegraded: "True/ReconcileFailed"}, degraded: []string{"quota exceeded"}},
		{name: "unfit topics",
			mutate: func(_ *docexecv1.DocExecutorPool, w *wanted, _ *observed, _ *outcome) {
				w.info.Problem = "topic dead is missing"
			},
			want: map[string]string{docexecv1.ConditionDegraded: "True/TopicsUnfit"}, degraded: []string{"topic dead is missing"}},
		{name: "Kafka unreachable while following the topic",
			mutate: func(_ *docexecv1.DocExecutorPool, w *wanted, _ *observed, _ *outcome) {
				w.err, w.topic = errors.New("connection refused"), nil
			},
			want: map[string]string{docexecv1.ConditionDegraded: "True/KafkaUnreachable"}, degraded: []string{"connection refused"}},
		{name: "Kafka unreachable does not matter with a set partition count",
			mutate: func(p *docexecv1.DocExecutorPool, w *wanted, _ *observed, _ *outcome) {
				w.err, w.topic, p.Spec.Partitions = errors.New("connection refused"), nil, ptr.To[int32](2)
			},
			want: map[string]string{docexecv1.ConditionDegraded: "False/AsExpected"}},
		{name: "more partitions than the topic has",
			mutate: func(_ *docexecv1.DocExecutorPool, w *wanted, _ *observed, _ *outcome) { w.topic = ptr.To[int32](1) },
			want:   map[string]string{docexecv1.ConditionDegraded: "True/PartitionsMissing"}},
		{name: "fewer partitions than the topic has",
			mutate: func(_ *docexecv1.DocExecutorPool, w *wanted, _ *observed, _ *outcome) { w.topic = ptr.To[int32](3) },
			want:   map[string]string{docexecv1.ConditionDegraded: "True/PartitionsNotCovered"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			pool, want, o, hashes := runningPool()
			var out outcome
			if c.mutate != nil {
				c.mutate(pool, &want, &o, &out)
			}
			st := buildStatus(pool, want, o, hashes, out)
			for typ, w := range c.want {
				cond := meta.FindStatusCondition(st.Conditions, typ)
				if cond == nil || string(cond.Status)+"/"+cond.Reason != w || cond.ObservedGeneration != pool.Generation {
					t.Errorf("%s: %+v, want %s", typ, cond, w)
				}
			}
			msg := meta.FindStatusCondition(st.Conditions, docexecv1.ConditionDegraded).Message
			for _, words := range c.degraded {
				if !strings.Contains(msg, words) {
					t.Errorf("Degraded says %q, want %q in it", msg, words)
				}
			}
			// Built again on top of itself from the same inputs: the same
			// status, so a pass that meets the same state writes nothing.
			pool.Status = st
			if again := buildStatus(pool, want, o, hashes, out); !equality.Semantic.DeepEqual(again, st) {
				t.Errorf("the same inputs built another status:\n%+v\n%+v", st, again)
			}
		})
	}
}

func runningPool() (*docexecv1.DocExecutorPool, wanted, observed, []string) {
	pool := &docexecv1.DocExecutorPool{ObjectMeta: metav1.ObjectMeta{Name: "docs", Generation: 3}}
	pool.Spec.ReplicasPerPartition = 2
	pool.Spec.Kafka.InputTopic = "updates"
	o := observed{deployments: map[int32]*appsv1.Deployment{}, leases: map[int32]*coordinationv1.Lease{}}
	var hashes []string
	for p := range int32(2) {
		hash := "h" + string('0'+rune(p))
		hashes = append(hashes, hash)
		o.deployments[p] = &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Generation: 1, Annotations: map[string]string{AnnotationHash: hash}},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)},
			Status:     appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2},
		}
		o.leases[p] = &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("pod-" + string('a'+rune(p)))}}
	}
	return pool, wanted{count: 2, topic: ptr.To[int32](2)}, o, hashes
}

func TestStatusChangesAreTheEventsAPersonWants(t *testing.T) {
	withLeaders := func(leaders ...string) docexecv1.DocExecutorPoolStatus {
		var st docexecv1.DocExecutorPoolStatus
		for i, l := range leaders {
			st.PartitionStatuses = append(st.PartitionStatuses, docexecv1.PartitionStatus{Partition: int32(i), Leader: l})
		}
		return st
	}
	withCondition := func(st docexecv1.DocExecutorPoolStatus, typ string, ok bool, reason, msg string) docexecv1.DocExecutorPoolStatus {
		st.Conditions = slices.Clone(st.Conditions)
		setCondition(&st, 1, typ, ok, reason, msg)
		return st
	}
	many := make([]string, 8)
	moved := make([]string, 8)
	for i := range many {
		many[i], moved[i] = "a", "b"
	}
	for _, c := range []struct {
		name          string
		before, after docexecv1.DocExecutorPoolStatus
		want          []poolEvent
	}{
		{name: "nothing changed", before: withLeaders("a", "b"), after: withLeaders("a", "b")},
		{name: "a first leader, or one after none, is news", before: withLeaders("", ""), after: withLeaders("a", ""),
			want: []poolEvent{{corev1.EventTypeNormal, docexecv1.EventLeaderChanged, "New leader of partition 0: a"}}},
		{name: "a new partition is no news", before: withLeaders("a"), after: withLeaders("a", "b")},
		{name: "a leader changed", before: withLeaders("a", "b"), after: withLeaders("a", "c"),
			want: []poolEvent{{corev1.EventTypeNormal, docexecv1.EventLeaderChanged, "New leader of partition 1: c"}}},
		{name: "a partition lost its leader", before: withLeaders("a", "b"), after: withLeaders("", "b"),
			want: []poolEvent{{corev1.EventTypeWarning, docexecv1.EventPartitionWithoutLeader, "No leader for partition 0 (was a)"}}},
		{name: "a rollout of many partitions is one event", before: withLeaders(many...), after: withLeaders(moved...),
			want: []poolEvent{{corev1.EventTypeNormal, docexecv1.EventLeaderChanged, "New leader of partition 0: b, 1: b, 2: b, 3: b, 4: b and 3 more"}}},
		{name: "paused", before: withCondition(withLeaders(), docexecv1.ConditionReady, true, docexecv1.ReasonAllPartitionsReady, ""),
			after: withCondition(withLeaders(), docexecv1.ConditionReady, false, docexecv1.ReasonPaused, ""),
			want:  []poolEvent{{corev1.EventTypeNormal, docexecv1.EventPaused, "Paused: every partition scales to zero pods"}}},
		{name: "resumed", before: withCondition(withLeaders(), docexecv1.ConditionReady, false, docexecv1.ReasonPaused, ""),
			after: withCondition(withLeaders(), docexecv1.ConditionReady, false, docexecv1.ReasonPartitionsNotReady, ""),
			want:  []poolEvent{{corev1.EventTypeNormal, docexecv1.EventResumed, "Resumed: every partition scales back to its replicas"}}},
		{name: "degraded", before: withLeaders(),
			after: withCondition(withLeaders(), docexecv1.ConditionDegraded, true, docexecv1.ReasonOwnershipConflict, "ConfigMap x-config"),
			want:  []poolEvent{{corev1.EventTypeWarning, docexecv1.ReasonOwnershipConflict, "ConfigMap x-config"}}},
		{name: "still degraded the same way is no news",
			before: withCondition(withLeaders(), docexecv1.ConditionDegraded, true, docexecv1.ReasonTopicsUnfit, "m"),
			after:  withCondition(withLeaders(), docexecv1.ConditionDegraded, true, docexecv1.ReasonTopicsUnfit, "m")},
		{name: "degraded for another reason",
			before: withCondition(withLeaders(), docexecv1.ConditionDegraded, true, docexecv1.ReasonTopicsUnfit, "m"),
			after:  withCondition(withLeaders(), docexecv1.ConditionDegraded, true, docexecv1.ReasonReconcileFailed, "n"),
			want:   []poolEvent{{corev1.EventTypeWarning, docexecv1.ReasonReconcileFailed, "n"}}},
		{name: "recovered",
			before: withCondition(withLeaders(), docexecv1.ConditionDegraded, true, docexecv1.ReasonTopicsUnfit, "m"),
			after:  withCondition(withLeaders(), docexecv1.ConditionDegraded, false, docexecv1.ReasonAsExpected, ""),
			want:   []poolEvent{{corev1.EventTypeNormal, docexecv1.EventRecovered, "No longer degraded (was TopicsUnfit)"}}},
		{name: "never degraded is no news", before: withLeaders(),
			after: withCondition(withLeaders(), docexecv1.ConditionDegraded, false, docexecv1.ReasonAsExpected, "")},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := statusEvents(c.before, c.after); !slices.Equal(got, c.want) {
				t.Fatalf("events %+v, want %+v", got, c.want)
			}
		})
	}
}
