// Package leader decides which of a partition's identical executors works:
// one leads, the others wait as warm standbys. An Elector runs one term at a
// time: it waits to lead, runs the work while leading, and gives the
// leadership up only after the work has returned, so that a leader stopping
// on SIGTERM finishes its batch and its sync before a standby takes over.
//
// Leadership alone does not fence (a paused leader may wake up after its
// term): the Redis epoch and the Kafka transactional id do; see package
// pipeline.
package leader

import (
	"context"
	"sync/atomic"
)

// Elector runs terms of leadership.
type Elector interface {
	// Lead waits until the caller leads (or ctx ends: then it returns
	// led=false), runs work with a context that ends when ctx ends or the
	// leadership is lost, and gives the leadership up when work returns.
	Lead(ctx context.Context, work func(context.Context) error) (led bool, err error)
}

// Local is an Elector for executors of one process (local mode): a lock
// per partition.
type Local struct {
	held      chan struct{}
	terms     atomic.Int64
	handovers *atomic.Int64
}

// NewLocal returns a lock whose changes of leader are counted in handovers
// (shared by the partitions of a process).
func NewLocal(handovers *atomic.Int64) *Local {
	return &Local{held: make(chan struct{}, 1), handovers: handovers}
}

// Lead implements Elector.
func (l *Local) Lead(ctx context.Context, work func(context.Context) error) (bool, error) {
	select {
	case l.held <- struct{}{}:
	case <-ctx.Done():
		return false, nil
	}
	defer func() { <-l.held }()
	if ctx.Err() != nil { // stopping and the lock came together
		return false, nil
	}
	if l.terms.Add(1) > 1 && l.handovers != nil {
		l.handovers.Add(1)
	}
	return true, work(ctx)
}
