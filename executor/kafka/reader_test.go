package kafka_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/internal/testenv"
)

// produce writes values to partition 0 of topic, each with a header
// naming it.
func produce(t *testing.T, cfg kafka.Config, topic string, values ...string) {
	t.Helper()
	p, err := kafka.NewPartitionProducer(cfg, kafka.DefaultMaxMessageBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var msgs []kafka.Message
	for _, v := range values {
		msgs = append(msgs, kafka.Message{Topic: topic, Value: []byte(v), Headers: []kafka.Header{{Key: []byte("value"), Value: []byte(v)}}})
	}
	if err := p.Send(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
}

func TestPollCutsBatchesByRecordsAndBytes(t *testing.T) {
	cfg := kafka.Config{Brokers: testenv.Kafka(t, 1, "in")}
	produce(t, cfg, "in", "aaa", "bbb", "a value larger than the batch", "ccc", "ddd", "eee", "fff", "g", "a large value after a small one")
	client, err := kafka.Connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	// The wait outlasts the test: only the bounds close these batches.
	r, err := client.Read(kafka.ReadOptions{Topic: "in", MaxRecords: 2, MaxBytes: 5, MaxWait: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// A bound that stops working shows as a failure, not as a test that
	// waits for its timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got [][]string
	var kept []kafka.Record // copied out: they must outlive the next Poll
	for range 5 {
		batch, err := r.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var values []string
		for _, m := range batch {
			values = append(values, string(m.Value))
		}
		got = append(got, values)
		kept = append(kept, batch...)
	}
	// A batch closes at the record that reaches the byte bound, large or
	// not: it may exceed the bound by that one record.
	want := [][]string{{"aaa", "bbb"}, {"a value larger than the batch"}, {"ccc", "ddd"}, {"eee", "fff"}, {"g", "a large value after a small one"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches %q, want %q", got, want)
	}
	for i, m := range kept {
		if m.Offset != int64(i) || m.Topic != "in" || m.Partition != 0 || len(m.Headers) != 1 ||
			string(m.Headers[0].Key) != "value" || string(m.Headers[0].Value) != string(m.Value) {
			t.Fatalf("record %d is %+v, want offset %d of in/0 with its header", i, m, i)
		}
	}
	ended, end := context.WithCancel(context.Background())
	end()
	if batch, err := r.Poll(ended); len(batch) != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("a Poll whose context ended returned %d records, %v", len(batch), err)
	}
}

func TestABatchThatIsNotFullClosesWhenItsWaitEnds(t *testing.T) {
	cfg := kafka.Config{Brokers: testenv.Kafka(t, 1, "in")}
	produce(t, cfg, "in", "a", "b", "c")
	client, err := kafka.Connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, wait := range []time.Duration{0, 10 * time.Millisecond} {
		r, err := client.Read(kafka.ReadOptions{Topic: "in", MaxRecords: 100, MaxWait: wait})
		if err != nil {
			t.Fatal(err)
		}
		// No more records come: each Poll returns at its wait's end (a
		// wait that never ends fails at the deadline).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var got []string
		for len(got) < 3 {
			batch, err := r.Poll(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range batch {
				got = append(got, string(m.Value))
			}
		}
		cancel()
		r.Close()
		if !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Fatalf("wait %v: read %q", wait, got)
		}
	}
}

func TestAReaderOfEmptyBatchesIsRefused(t *testing.T) {
	client, err := kafka.Connect(kafka.Config{Brokers: testenv.Kafka(t, 1, "in")})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Read(kafka.ReadOptions{Topic: "in"}); !errors.Is(err, kafka.ErrInvalidConfig) || !strings.Contains(err.Error(), "MaxRecords") {
		t.Errorf("a reader of batches of no records: %v", err)
	}
}

// TestASendGivenUpOnGoesOnUntilClose holds the broker's answer to a
// produce request until the sender's context ended: Send returns then,
// and Close waits for the send, which lands.
func TestASendGivenUpOnGoesOnUntilClose(t *testing.T) {
	cluster := testenv.KafkaCluster(t, 1, "in")
	cfg := kafka.Config{Brokers: cluster.ListenAddrs()}
	p, err := kafka.NewPartitionProducer(cfg, kafka.DefaultMaxMessageBytes)
	if err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.DropControl()
		close(held)
		cluster.SleepControl(func() { <-release })
		return nil, nil, false // then answered as usual
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-held; cancel() }()
	if err := p.Send(ctx, []kafka.Message{{Topic: "in", Value: []byte("late")}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("a send whose context ended: %v", err)
	}
	close(release)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	client, err := kafka.Connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if m := read(t, client, "in", 0, 0, 1)[0]; string(m.Value) != "late" {
		t.Fatalf("read %q, want the send given up on", m.Value)
	}
}
