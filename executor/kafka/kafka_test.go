package kafka_test

import (
	"context"
	"errors"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/docexec/docexec/executor/fencing"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/internal/testenv"
)

func TestPublishCommitsMessagesAndOffsetTogether(t *testing.T) {
	brokers := testenv.Kafka(t, 2, "in", "out")
	cfg := kafka.Config{Brokers: brokers}
	client, err := kafka.Connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, found, err := client.Committed("g", "in", 1); err != nil || found {
		t.Fatalf("committed before any publish: found=%v, %v", found, err)
	}
	w, err := kafka.NewWriter(cfg, kafka.WriterOptions{TransactionalID: kafka.TransactionalID("p", "in", 1), Group: "g", InputTopic: "in", Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	msgs := []kafka.Message{{Topic: "out", Partition: 1, Key: []byte("k1"), Value: []byte("v1")}, {Topic: "out", Partition: 1, Key: []byte("k2"), Value: []byte("v2")}}
	if err := w.Publish(context.Background(), msgs, 42); err != nil {
		t.Fatal(err)
	}
	if off, found, err := client.Committed("g", "in", 1); err != nil || !found || off != 42 {
		t.Fatalf("committed %d (found %v, %v), want 42", off, found, err)
	}
	for i, m := range read(t, client, "out", 1, 0, 2) {
		if want := string(msgs[i].Value); string(m.Value) != want || m.Partition != 1 {
			t.Fatalf("read %q on partition %d, want %q on 1", m.Value, m.Partition, want)
		}
	}
	if hwm, err := client.Offset("out", 0, kafka.Latest); err != nil || hwm != 0 {
		t.Fatalf("partition 0 high-water mark %d, %v: the writer must use the partition it is given", hwm, err)
	}
}

func TestANewerWriterFencesTheOlder(t *testing.T) {
	brokers := testenv.Kafka(t, 1, "in", "out")
	cfg := kafka.Config{Brokers: brokers}
	opts := kafka.WriterOptions{TransactionalID: kafka.TransactionalID("p", "in", 0), Group: "g", InputTopic: "in", Partition: 0}
	old, err := kafka.NewWriter(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Publish(context.Background(), []kafka.Message{{Topic: "out", Value: []byte("a")}}, 1); err != nil {
		t.Fatal(err)
	}
	newer, err := kafka.NewWriter(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer newer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = old.Publish(ctx, []kafka.Message{{Topic: "out", Value: []byte("stale")}}, 2)
	if !errors.Is(err, fencing.ErrFenced) {
		t.Fatalf("old writer got %v, want ErrFenced", err)
	}
	if err := newer.Publish(ctx, []kafka.Message{{Topic: "out", Value: []byte("b")}}, 2); err != nil {
		t.Fatal(err)
	}
	client, err := kafka.Connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for i, m := range read(t, client, "out", 0, 0, 2) {
		if want := []string{"a", "b"}[i]; string(m.Value) != want {
			t.Fatalf("read %q, want %q (a fenced writer's message is never committed)", m.Value, want)
		}
	}
}

// failProduce makes the broker answer the next produce request with code
// for every partition.
func failProduce(c *kfake.Cluster, code int16) {
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.ProduceRequest)
		return testenv.RefusedProduce(req, code), nil, true
	})
}

func TestAFailedTransactionIsRetriedAndCommittedOnce(t *testing.T) {
	cluster := testenv.KafkaCluster(t, 1, "in", "out")
	cfg := kafka.Config{Brokers: cluster.ListenAddrs()}
	w, err := kafka.NewWriter(cfg, kafka.WriterOptions{TransactionalID: "t", Group: "g", InputTopic: "in"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	failProduce(cluster, kerr.InvalidRecord.Code) // abortable
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Publish(ctx, []kafka.Message{{Topic: "out", Value: []byte("once")}}, 7); err != nil {
		t.Fatal(err)
	}
	if err := w.Publish(ctx, []kafka.Message{{Topic: "out", Value: []byte("next")}}, 8); err != nil {
		t.Fatal(err)
	}
	client, err := kafka.Connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if off, _, err := client.Committed("g", "in", 0); err != nil || off != 8 {
		t.Fatalf("committed %d, %v; want 8", off, err)
	}
	var got []string
	for _, m := range read(t, client, "out", 0, 0, 2) {
		got = append(got, string(m.Value))
	}
	if got[0] != "once" || got[1] != "next" {
		t.Fatalf("read %q, want [once next]: the failed try must not show", got)
	}
}

func TestARecordTheBrokerRefusesIsAPermanentError(t *testing.T) {
	cluster := testenv.KafkaCluster(t, 1, "in", "out")
	w, err := kafka.NewWriter(kafka.Config{Brokers: cluster.ListenAddrs()}, kafka.WriterOptions{TransactionalID: "t", Group: "g", InputTopic: "in"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	failProduce(cluster, kerr.MessageTooLarge.Code)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = w.Publish(ctx, []kafka.Message{{Topic: "out", Value: []byte("big")}}, 1)
	if !errors.Is(err, kafka.ErrPermanent) {
		t.Fatalf("got %v, want ErrPermanent", err)
	}
}

// TestAWriterFencedWhileRecoveringNeverReopens plays the hole: the old
// leader's transaction fails (an abortable error); before it has aborted,
// a new leader opens the partition's producer; the old one's abort then
// meets the fence. It must give up with ErrFenced — reopening its producer
// would fence the new leader and let it publish stale states after newer.
func TestAWriterFencedWhileRecoveringNeverReopens(t *testing.T) {
	cluster := testenv.KafkaCluster(t, 1, "in", "out")
	cfg := kafka.Config{Brokers: cluster.ListenAddrs()}
	opts := kafka.WriterOptions{TransactionalID: "t", Group: "g", InputTopic: "in"}
	old, err := kafka.NewWriter(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	failProduce(cluster, kerr.InvalidRecord.Code) // abortable
	aborting, newerOpen := make(chan struct{}), make(chan struct{})
	var first sync.Once
	cluster.ControlKey(int16(kmsg.EndTxn), func(kmsg.Request) (kmsg.Response, error, bool) {
		first.Do(func() {
			close(aborting)
			cluster.SleepControl(func() { <-newerOpen })
		})
		cluster.DropControl()
		return nil, nil, false // the broker handles the abort
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	published := make(chan error, 1)
	go func() { published <- old.Publish(ctx, []kafka.Message{{Topic: "out", Value: []byte("stale")}}, 1) }()
	select {
	case <-aborting:
	case err := <-published:
		t.Fatalf("the old writer returned %v before aborting", err)
	case <-ctx.Done():
		t.Fatal("the old writer never aborted")
	}
	newer, err := kafka.NewWriter(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer newer.Close()
	close(newerOpen)
	if err := <-published; !errors.Is(err, fencing.ErrFenced) {
		t.Fatalf("the old writer got %v, want ErrFenced", err)
	}
	if err := newer.Publish(ctx, []kafka.Message{{Topic: "out", Value: []byte("fresh")}}, 2); err != nil {
		t.Fatalf("the new writer was fenced by the old one: %v", err)
	}
	client, err := kafka.Connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if m := read(t, client, "out", 0, 0, 1)[0]; string(m.Value) != "fresh" {
		t.Fatalf("read %q first, want only the new writer's record", m.Value)
	}
}

// read returns the first n records of a partition from offset from,
// failing t when they do not all come within 10 s.
func read(t *testing.T, client *kafka.Client, topic string, partition int32, from int64, n int) []kafka.Record {
	t.Helper()
	r, err := client.Read(kafka.ReadOptions{Topic: topic, Partition: partition, Offset: from, MaxRecords: n})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []kafka.Record
	for len(got) < n {
		batch, err := r.Poll(ctx)
		got = append(got, batch...)
		if err != nil {
			t.Fatalf("read %d records of %d from %s/%d: %v", len(got), n, topic, partition, err)
		}
	}
	return got[:n]
}

func TestMessagesEncodeAndDecodeExactly(t *testing.T) {
	msgs := []kafka.Message{
		{Topic: "out", Partition: 3, Key: []byte("https://ü.example/"), Value: []byte(`{"text":"\u2028"}`)},
		{Topic: "dlq", Partition: 0, Key: nil, Value: []byte{}, Headers: []kafka.Header{{Key: []byte("docexec-reason"), Value: []byte("too large")}, {Key: []byte("k"), Value: nil}}},
		{Topic: "", Partition: 2147483647},
	}
	b := kafka.AppendMessages([]byte("prefix"), msgs)
	got, rest, err := kafka.DecodeMessages(b[len("prefix"):])
	if err != nil || len(rest) != 0 || !reflect.DeepEqual(got, msgs) {
		t.Fatalf("decoded %+v, rest %q, %v; want %+v", got, rest, err, msgs)
	}
	for cut := range len(b) - len("prefix") {
		if _, _, err := kafka.DecodeMessages(b[len("prefix") : len("prefix")+cut]); err == nil {
			t.Fatalf("a cut of %d bytes decoded", cut)
		}
	}
}
