package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/IBM/sarama"
)

// Producer writes messages outside transactions: keyed input, partitioned
// by a hash of the key (sarama's default) so that all updates of a url share
// a partition, as local mode feeds its input; or messages to the partition
// they name, as the sync's dead letters go.
type Producer struct {
	client   sarama.Client
	producer sarama.SyncProducer
	budget   int
	sending  sync.WaitGroup // sends that ctx gave up on, which Close waits for
}

// NewProducer opens an idempotent producer, partitioning by key, to topics
// that accept record batches of limit bytes (MaxMessageBytes).
func NewProducer(cfg Config, limit int) (*Producer, error) {
	return newProducer(cfg, limit, sarama.NewHashPartitioner)
}

// NewPartitionProducer is NewProducer writing each message to its own
// Partition.
func NewPartitionProducer(cfg Config, limit int) (*Producer, error) {
	return newProducer(cfg, limit, sarama.NewManualPartitioner)
}

func newProducer(cfg Config, limit int, partitioner sarama.PartitionerConstructor) (*Producer, error) {
	sc, err := cfg.idempotentProducer(partitioner, limit)
	if err != nil {
		return nil, err
	}
	client, err := cfg.connect(sc)
	if err != nil {
		return nil, fmt.Errorf("kafka: producer: %w", err)
	}
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("kafka: open producer: %w", err)
	}
	return &Producer{client: client, producer: producer, budget: sc.Producer.MaxMessageBytes}, nil
}

// Fits reports whether m is small enough to send (see RecordBudget).
func (p *Producer) Fits(m Message) bool { return RecordBytes(m) <= p.budget }

// Budget is the largest record the producer sends, as RecordBytes counts.
func (p *Producer) Budget() int { return p.budget }

// Send writes msgs and waits until all are acknowledged, or until ctx
// ends: then it returns at once, and the send goes on; Close waits for it
// (the byte slices of msgs must stay unchanged until then; msgs itself may
// be reused).
func (p *Producer) Send(ctx context.Context, msgs []Message) error {
	records := producerMessages(msgs)
	sent := make(chan error, 1)
	p.sending.Add(1)
	go func() { defer p.sending.Done(); sent <- p.producer.SendMessages(records) }()
	select {
	case err := <-sent:
		if err != nil {
			return fmt.Errorf("kafka: send %d messages: %w", len(records), classify(err))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kafka: send %d messages: %w", len(records), ctx.Err())
	}
}

// Close closes the producer, which first finishes the sends in flight,
// and waits for those that Send gave up on to return.
func (p *Producer) Close() error {
	err := errors.Join(p.producer.Close(), p.client.Close())
	p.sending.Wait()
	return err
}
