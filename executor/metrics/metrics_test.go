package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/docexec/docexec/executor/metrics"
)

// lagSeconds returns the consumer_lag_seconds of the only partition of reg.
func lagSeconds(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "docexec_consumer_lag_seconds" {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no docexec_consumer_lag_seconds")
	return 0
}

func TestTheLagInSecondsIsTheAgeOfTheLastCommittedMessageWhileMessagesRemain(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := metrics.New(reg).Partition("pool", 3)
	if got := lagSeconds(t, reg); got != 0 {
		t.Fatalf("lag %v s before any batch, want 0", got)
	}
	p.Committed(100, 150, time.Now().Add(-time.Hour))
	if got := lagSeconds(t, reg); got < 3600 {
		t.Fatalf("lag %v s behind a message an hour old, want at least 3600", got)
	}
	if got := testutil.ToFloat64(p.DeadLettered[metrics.Refused]); got != 0 {
		t.Fatalf("refused dead letters %v before any, want a series at 0", got)
	}
	p.Committed(150, 150, time.Now().Add(-time.Hour))
	if got := lagSeconds(t, reg); got != 0 {
		t.Fatalf("lag %v s once caught up, want 0", got)
	}
}
