package manager

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/go-logr/logr/funcr"
)

func TestErrorsOfOurOwnStopAreDebugLinesOnlyWhileStopping(t *testing.T) {
	var lines []string
	logAt := func(verbosity int) {
		lines = nil
		base := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: verbosity})
		stopping := false
		log := quietStop(base, func() bool { return stopping }).WithName("manager").WithValues("k", "v")
		log.Error(errors.New(stopNoiseErr), "error received after stop sequence was engaged")   // lost while running: real
		log.Error(fmt.Errorf("get lease: %w", context.Canceled), "Error retrieving lease lock") // canceled by someone else: real
		stopping = true
		log.Error(errors.New(stopNoiseErr), "error received after stop sequence was engaged")
		log.Error(fmt.Errorf("get lease: %w", context.Canceled), "Error retrieving lease lock")
		log.Error(errors.New("informer failed"), "Failed to sync")
	}
	logAt(0)
	if len(lines) != 3 {
		t.Fatalf("logged %d lines, want 3 (all but the two caused by our stop):\n%q", len(lines), lines)
	}
	logAt(1)
	if len(lines) != 5 {
		t.Fatalf("at debug verbosity logged %d lines, want 5 (our stop's errors as debug lines):\n%q", len(lines), lines)
	}
}
