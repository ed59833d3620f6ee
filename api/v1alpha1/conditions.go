package v1alpha1

// The conditions of a pool's status and their reasons, and the reasons of
// the events the operator records on a pool. They are API: tools match on
// them. docs/api.md lists them, generated from this file's comments.

// Condition types.
const (
	// ConditionReady is True when every partition has a ready pod that holds
	// its Lease.
	ConditionReady = "Ready"
	// ConditionProgressing is True while a partition is created, removed or
	// rolls out a changed spec.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when something keeps the pool from working
	// as its spec says; its reason says what, its message what to do.
	ConditionDegraded = "Degraded"
)

// Reasons of the Ready condition.
const (
	// ReasonAllPartitionsReady (True): every partition has a ready leader.
	ReasonAllPartitionsReady = "AllPartitionsReady"
	// ReasonPartitionsNotReady (False): some partition has no ready leader.
	ReasonPartitionsNotReady = "PartitionsNotReady"
	// ReasonPaused (False): spec.paused scales every partition to zero pods.
	ReasonPaused = "Paused"
)

// Reasons of the Progressing condition.
const (
	// ReasonRollingOut (True): a partition is being created, removed or
	// updated; the message names the first.
	ReasonRollingOut = "RollingOut"
	// ReasonStable (False): every partition runs the current spec.
	ReasonStable = "Stable"
)

// Reasons of the Degraded condition, the first that applies.
const (
	// ReasonOwnershipConflict (True): an object the pool needs exists and is
	// not the pool's: another controller, or neither the pool as controller
	// nor the labels docexec.io/pool=<pool> and
	// app.kubernetes.io/managed-by=docexec-operator. The operator leaves it
	// untouched (and, if the executors would run with it, their partitions
	// too); delete or rename it.
	ReasonOwnershipConflict = "OwnershipConflict"
	// ReasonReconcileFailed (True): writing the pool's objects failed; the
	// message is the error. The operator retries with backoff.
	ReasonReconcileFailed = "ReconcileFailed"
	// ReasonTopicsUnfit (True): the output or dead-letter topic cannot serve
	// the pool, or the input topic is missing; executors exit at start.
	ReasonTopicsUnfit = "TopicsUnfit"
	// ReasonKafkaUnreachable (True): the input topic's partition count
	// cannot be read, and the pool follows it (spec.partitions is unset).
	ReasonKafkaUnreachable = "KafkaUnreachable"
	// ReasonPartitionsMissing (True): the pool runs more partitions than the
	// input topic has.
	ReasonPartitionsMissing = "PartitionsMissing"
	// ReasonPartitionsNotCovered (True): the input topic has partitions the
	// pool does not run.
	ReasonPartitionsNotCovered = "PartitionsNotCovered"
	// ReasonAsExpected (False): nothing of the above.
	ReasonAsExpected = "AsExpected"
)

// Reasons of the events recorded on a pool. A Degraded condition that
// turns True, or changes its reason or message, is also an event (Warning)
// whose reason is the condition's.
const (
	// EventPartitionsScaled (Normal): partitions were added or removed.
	EventPartitionsScaled = "PartitionsScaled"
	// EventLeaderChanged (Normal): partitions got a new leader pod (a
	// first one too).
	EventLeaderChanged = "LeaderChanged"
	// EventPartitionWithoutLeader (Warning): partitions that had a leader
	// have none.
	EventPartitionWithoutLeader = "PartitionWithoutLeader"
	// EventPaused (Normal): the pool was paused.
	EventPaused = "Paused"
	// EventResumed (Normal): the pool was resumed.
	EventResumed = "Resumed"
	// EventRecovered (Normal): the Degraded condition turned False.
	EventRecovered = "Recovered"
)
