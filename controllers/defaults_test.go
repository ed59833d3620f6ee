package controllers_test

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/docexec/docexec/executor/config"
)

// TestTheCRDsDefaultsAreTheExecutorsDefaults: a pool that sets nothing it
// may leave out runs executors configured exactly as one started by hand
// with no settings, so that a default changed in one place and not the
// other shows here.
func TestTheCRDsDefaultsAreTheExecutorsDefaults(t *testing.T) {
	e := newEnv(t, fixedTopics{n: 1})
	e.reconcile(e.pool("docs", nil))
	var d appsv1.Deployment
	e.mustGet(&d, "docs-p0")
	got, want := e.executorConfig(d.Spec.Template.Spec.Containers[0]), config.Default()
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"batch", got.Batch, want.Batch},
		{"sync", got.Sync, want.Sync},
		{"shutdownTimeout", got.ShutdownTimeout, want.ShutdownTimeout},
		{"leader.leaseDuration", got.Leader.LeaseDuration, want.Leader.LeaseDuration},
		{"leader.renewDeadline", got.Leader.RenewDeadline, want.Leader.RenewDeadline},
		{"leader.retryPeriod", got.Leader.RetryPeriod, want.Leader.RetryPeriod},
		{"kafka.compression", got.Kafka.Compression, want.Kafka.Compression},
		{"kafka.format", got.Kafka.Format, want.Kafka.Format},
		{"kafka.startOffset", got.Kafka.StartOffset, want.Kafka.StartOffset},
		{"redis.cleanTTL", got.Redis.CleanTTL, want.Redis.CleanTTL},
	} {
		if c.got != c.want {
			t.Errorf("%s: the CRD's default gives %v, the executor's is %v", c.name, c.got, c.want)
		}
	}
}
