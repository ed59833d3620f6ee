package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/internal/testenv"
)

func TestMaxMessageBytesReadsWhatTheBrokersAccept(t *testing.T) {
	brokers := testenv.Kafka(t, 1, "plain")
	testenv.CreateTopic(t, brokers, "small", 1, map[string]string{"max.message.bytes": "200000"})
	client, err := kafka.Connect(kafka.Config{Brokers: brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, tc := range []struct {
		topic string
		want  int
	}{
		{"small", 200000},  // the topic's own setting
		{"plain", 1048588}, // the broker's default, as the topic reports it
	} {
		got, source, err := client.MaxMessageBytes(tc.topic)
		if err != nil || got != tc.want {
			t.Errorf("%s: %d (%s), %v; want %d", tc.topic, got, source, err, tc.want)
		}
	}
	if _, _, err := client.MaxMessageBytes("missing"); !errors.Is(err, kafka.ErrNoTopic) {
		t.Errorf("a missing topic: %v, want ErrNoTopic", err)
	}
}

// TestATransactionLargerThanTheTopicsLimitIsPublished sends, in one
// transaction, many records whose sum is far above the topic's limit, each
// compression in turn: the producer must cut them into batches the broker
// accepts.
func TestATransactionLargerThanTheTopicsLimitIsPublished(t *testing.T) {
	const limit = 100000
	for _, compression := range kafka.Compressions {
		t.Run(compression, func(t *testing.T) {
			brokers := testenv.Kafka(t, 1, "in")
			testenv.CreateTopic(t, brokers, "out", 1, map[string]string{"max.message.bytes": fmt.Sprint(limit)})
			cfg := kafka.Config{Brokers: brokers, Compression: compression}
			w, err := kafka.NewWriter(cfg, kafka.WriterOptions{TransactionalID: "t", Group: "g", InputTopic: "in", MaxMessageBytes: limit})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			// Records of the largest size allowed, of bytes that do not
			// compress (the worst case of every codec), then of text.
			var msgs []kafka.Message
			for i := range 30 {
				value := incompressible(w.Budget()-100, uint64(i))
				if i%2 == 1 {
					value = bytes.Repeat([]byte("web page text "), 3000)
				}
				msgs = append(msgs, kafka.Message{Topic: "out", Key: []byte(fmt.Sprint(i)), Value: value})
				if got := kafka.RecordBytes(msgs[i]); got > w.Budget() {
					t.Fatalf("record %d is %d bytes, above the budget %d", i, got, w.Budget())
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := w.Publish(ctx, msgs, 30); err != nil {
				t.Fatal(err)
			}
			client, err := kafka.Connect(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			for i, m := range read(t, client, "out", 0, 0, len(msgs)) {
				if !bytes.Equal(m.Value, msgs[i].Value) {
					t.Fatalf("record %d came back different", i)
				}
			}
		})
	}
}

func TestARecordAboveTheBudgetIsRefusedForGood(t *testing.T) {
	brokers := testenv.Kafka(t, 1, "in", "out")
	w, err := kafka.NewWriter(kafka.Config{Brokers: brokers}, kafka.WriterOptions{TransactionalID: "t", Group: "g", InputTopic: "in", MaxMessageBytes: 50000})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = w.Publish(ctx, []kafka.Message{{Topic: "out", Value: make([]byte, 60000)}}, 1)
	if !errors.Is(err, kafka.ErrPermanent) {
		t.Fatalf("got %v, want ErrPermanent", err)
	}
}

// incompressible returns n bytes that no codec can shrink.
func incompressible(n int, seed uint64) []byte {
	b := make([]byte, n)
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

func TestCheckTopics(t *testing.T) {
	brokers := testenv.Kafka(t, 2, "in", "out", "dlq")
	testenv.CreateTopic(t, brokers, "out1", 1, nil)
	client, err := kafka.Connect(kafka.Config{Brokers: brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, tc := range []struct {
		name, in, out, dlq string
		partition          int32
		want               string // "" when fit
	}{
		{"fit topics", "in", "out", "dlq", 1, ""},
		{"a missing input topic", "nope", "out", "dlq", 0, `kafka.inputTopic: topic "nope" does not exist`},
		{"a missing output topic", "in", "nope", "dlq", 0, `kafka.outputTopic: topic "nope" does not exist`},
		{"a missing dead-letter topic", "in", "out", "nope", 0, `kafka.deadLetterTopic: topic "nope" does not exist`},
		{"an output topic with fewer partitions", "in", "out1", "dlq", 0, `kafka.outputTopic: topic "out1" has 1 partitions, fewer than the 2 of input topic "in"`},
		{"a dead-letter topic with fewer partitions", "in", "out", "out1", 0, `kafka.deadLetterTopic: topic "out1" has 1 partitions`},
		{"a partition the input topic lacks", "in", "out", "dlq", 2, `partition: topic "in" has 2 partitions, no partition 2`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := client.CheckTopics(tc.in, tc.out, tc.dlq, tc.partition)
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (!errors.Is(err, kafka.ErrTopology) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want ErrTopology saying %s", err, tc.want)
			}
		})
	}
}
