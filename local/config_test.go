package local

import (
	"context"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/docexec/docexec/executor/config"
	"github.com/docexec/docexec/executor/partition"
)

// TestLocalExecutorsRunTheExecutorDefaults: local mode's executors run with
// `docexec executor`'s defaults but for what local mode sets on purpose, so
// that a default changed there is local mode's too.
func TestLocalExecutorsRunTheExecutorDefaults(t *testing.T) {
	for _, args := range [][]string{{"--partitions", "2", "--replicas", "2"}, {"--partitions", "1", "--batch-size", "7"}} {
		o, err := parse(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		log := slog.New(slog.DiscardHandler)
		s, err := startServers(context.Background(), o, log)
		if err != nil {
			t.Fatal(err)
		}
		defer s.close()
		// What local mode sets, and nothing else.
		want := config.Default()
		want.Pool = "local"
		want.Kafka.Brokers = s.cfg.Kafka.Brokers // the embedded Kafka's
		want.Kafka.InputTopic, want.Kafka.OutputTopic, want.Kafka.DeadLetterTopic = "updates", "states", "dead-letters"
		want.Kafka.Group = "docexec-local"
		want.Redis.Addresses = s.cfg.Redis.Addresses // the embedded Redis's
		want.Batch.Size = o.batchSize
		want.Leader.RetryPeriod = config.Duration(100 * time.Millisecond)
		if !reflect.DeepEqual(s.cfg, want) {
			t.Errorf("%v: local mode's executors are configured\n%+v\nwant the executor's defaults but for local mode's settings\n%+v", args, s.cfg, want)
		}
		// Stopped at once: only how they were built matters.
		stopped, cancel := context.WithCancel(context.Background())
		cancel()
		x, err := startExecutors(stopped, o, s, log)
		if err != nil {
			t.Fatal(err)
		}
		if err := x.stop(); err != nil {
			t.Fatal(err)
		}
		if len(x.all) != o.partitions*o.replicas {
			t.Fatalf("%v: %d executors, want %d", args, len(x.all), o.partitions*o.replicas)
		}
		for i, e := range x.all {
			want.Partition = int32(i / o.replicas)
			if got, want := e.Options(), partition.PipelineOptions(want); got != want {
				t.Errorf("%v: executor %d runs with\n%+v\nwant\n%+v", args, i, got, want)
			}
		}
	}
}
