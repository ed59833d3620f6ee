// Package fencing names the ways an executor loses the right to write its
// partition, and says what it must do about each. Package state (Redis),
// store (PostgreSQL), kafka (the transactional producer) and leader (the
// Lease) wrap these errors with their cause; pipeline, syncer and
// partition.Lead ask Classify what an error means instead of matching each
// package's errors themselves.
package fencing

import (
	"errors"
	"fmt"
)

var (
	// ErrFenced means another executor claimed the partition since this one
	// did (a higher epoch in Redis or PostgreSQL, a newer Kafka producer):
	// stop writing and stand by.
	ErrFenced = errors.New("fenced: another executor owns the partition")
	// ErrLost means Redis no longer holds the partition (restarted empty,
	// flushed): recover from PostgreSQL and Kafka.
	ErrLost = errors.New("partition state lost from Redis")
	// ErrStale means Redis went back in time (an older snapshot restored, a
	// lagging replica promoted): its states miss updates this executor
	// applied. It wraps ErrLost: the recovery is the same.
	ErrStale = fmt.Errorf("%w: Redis went back in time", ErrLost)
	// ErrLeaseLost wraps the error of a term whose leadership was lost
	// before the work ended: whatever failed then (often because a newer
	// leader already refused it) is the old leader's to forget, not a
	// reason to exit.
	ErrLeaseLost = errors.New("leadership lost during the term")
)

// Action is what an executor must do after an error.
type Action int

const (
	// Retry: the error is none of this package's. It may pass (a server
	// away) or be the term's own (a configuration Redis refuses, a batch
	// Kafka cannot take): retry after a pause, and report it meanwhile.
	Retry Action = iota
	// Recover: Redis lost the partition or went back in time (ErrLost). A
	// new term, at once, rebuilds it from PostgreSQL and Kafka.
	Recover
	// StandBy: another executor owns the partition (ErrFenced). Stop
	// writing; only a new claim may take it back, and that claim fences
	// the partition's current leader.
	StandBy
	// StepDown: the term's Lease was lost before the term ended
	// (ErrLeaseLost), and what failed then is not this executor's concern
	// any more: stand by.
	StepDown
)

// Classify says what err asks of the executor. Losing the partition's
// state wins over being fenced, and both over losing the Lease: the error
// of a term cut short by a lost Lease often wraps the refusal that a newer
// leader's epoch caused.
func Classify(err error) Action {
	switch {
	case errors.Is(err, ErrLost):
		return Recover
	case errors.Is(err, ErrFenced):
		return StandBy
	case errors.Is(err, ErrLeaseLost):
		return StepDown
	}
	return Retry
}

// EndsTerm reports whether the executor must stop using the partition
// rather than retry.
func (a Action) EndsTerm() bool { return a != Retry }

// String names the action in logs and test failures.
func (a Action) String() string {
	switch a {
	case Recover:
		return "recover"
	case StandBy:
		return "stand by"
	case StepDown:
		return "step down"
	}
	return "retry"
}
