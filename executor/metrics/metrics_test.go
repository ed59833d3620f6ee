package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/docexec/docexec/executor/metrics"
)

// gauge returns the value of the only partition's gauge name in reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

func TestTheLagInSecondsIsTheAgeOfTheLastCommittedMessageWhileMessagesRemain(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := metrics.New(reg).Partition("pool", 3)
	if got := gauge(t, reg, "docexec_consumer_lag_seconds"); got != 0 {
		t.Fatalf("lag %v s before any batch, want 0", got)
	}
	p.Committed(100, 150, time.Now().Add(-time.Hour))
	if got := gauge(t, reg, "docexec_consumer_lag_seconds"); got < 3600 {
		t.Fatalf("lag %v s behind a message an hour old, want at least 3600", got)
	}
	p.Committed(150, 150, time.Now().Add(-time.Hour))
	if got := gauge(t, reg, "docexec_consumer_lag_seconds"); got != 0 {
		t.Fatalf("lag %v s once caught up, want 0", got)
	}
}

func TestAStandbyReportsNoLag(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := metrics.New(reg).Partition("pool", 3)
	p.Led(true)
	p.Committed(100, 150, time.Now().Add(-time.Hour))
	p.SyncLag.Set(40)
	p.Led(false) // the term ended behind
	if got := gauge(t, reg, "docexec_consumer_lag_seconds"); got != 0 {
		t.Fatalf("a standby's lag %v s, want 0", got)
	}
	if got := testutil.ToFloat64(p.SyncLag); got != 0 {
		t.Fatalf("a standby's sync lag %v, want 0", got)
	}
	if got := gauge(t, reg, "docexec_consumer_lag_messages"); got != 0 {
		t.Fatalf("a standby's lag %v messages, want 0", got)
	}
	if got := gauge(t, reg, "docexec_leader"); got != 0 {
		t.Fatalf("a standby's docexec_leader %v, want 0", got)
	}
}

// TestEveryDeadLetterReasonIsServedFromTheStart: alerts and panels on
// dead letters see a series of each reason at 0, not none.
func TestEveryDeadLetterReasonIsServedFromTheStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg).Partition("pool", 3)
	if got, err := testutil.GatherAndCount(reg, "docexec_messages_dead_lettered_total"); err != nil || got != len(metrics.DeadLetterReasons) {
		t.Fatalf("%d dead-letter series (%v), want one per reason", got, err)
	}
}
