package manager

import (
	"errors"
	"testing"

	"github.com/go-logr/logr/funcr"
)

func TestTheStopNoiseIsDroppedOnlyWhileStopping(t *testing.T) {
	var lines []string
	base := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
	stopping := false
	log := quietStop(base, func() bool { return stopping }).WithName("manager").WithValues("k", "v")

	log.Error(errors.New(stopNoiseErr), stopNoiseMsg) // lost while running: a real failure
	stopping = true
	log.Error(errors.New(stopNoiseErr), stopNoiseMsg) // our own stop: noise
	log.Error(errors.New("informer failed"), stopNoiseMsg)
	log.Info("Stopped")
	if len(lines) != 3 {
		t.Fatalf("logged %d lines, want 3 (all but the noise while stopping):\n%q", len(lines), lines)
	}
}
