package fencing_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/docexec/docexec/executor/fencing"
)

func TestClassifySaysWhatTheExecutorMustDo(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want fencing.Action
	}{
		{"no error", nil, fencing.Retry},
		{"a server away", errors.New("dial tcp: connection refused"), fencing.Retry},
		{"stopped", fmt.Errorf("kafka: publish: %w", context.Canceled), fencing.Retry},
		{"lost", fmt.Errorf("state: write a batch of partition 3: %w (DXLOST)", fencing.ErrLost), fencing.Recover},
		{"went back in time", fmt.Errorf("state: begin sync of partition 3: %w (DXSTALE)", fencing.ErrStale), fencing.Recover},
		{"fenced", fmt.Errorf("store: save 2 states: %w", fencing.ErrFenced), fencing.StandBy},
		{"lease lost", fmt.Errorf("leader: %w: %w", fencing.ErrLeaseLost, errors.New("connection reset")), fencing.StepDown},
		// A term cut short by a lost Lease often failed because the newer
		// leader's epoch refused it: that refusal says more.
		{"fenced after the lease was lost", fmt.Errorf("leader: %w: %w", fencing.ErrLeaseLost, fmt.Errorf("kafka: %w", fencing.ErrFenced)), fencing.StandBy},
		{"lost after the lease was lost", fmt.Errorf("leader: %w: %w", fencing.ErrLeaseLost, fencing.ErrStale), fencing.Recover},
	} {
		if got := fencing.Classify(c.err); got != c.want {
			t.Errorf("%s: Classify(%v) = %s, want %s", c.name, c.err, got, c.want)
		}
		if ends := fencing.Classify(c.err).EndsTerm(); ends != (c.want != fencing.Retry) {
			t.Errorf("%s: EndsTerm = %v", c.name, ends)
		}
	}
}
