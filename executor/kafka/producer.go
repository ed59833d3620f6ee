package kafka

import (
	"errors"
	"fmt"

	"github.com/IBM/sarama"
)

// Producer writes keyed input messages, partitioned by a hash of the key
// (sarama's default), so that all updates of a url share a partition.
// Local mode feeds its input with it.
type Producer struct {
	client   sarama.Client
	producer sarama.SyncProducer
	budget   int
}

// NewProducer opens an idempotent producer to topics that accept record
// batches of limit bytes (MaxMessageBytes).
func NewProducer(cfg Config, limit int) (*Producer, error) {
	sc, err := cfg.idempotentProducer(sarama.NewHashPartitioner, limit)
	if err != nil {
		return nil, err
	}
	client, err := sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		return nil, fmt.Errorf("kafka: connect producer: %w", err)
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

// Send writes msgs (their Partition is ignored: the key decides) and waits
// until all are acknowledged.
func (p *Producer) Send(msgs []Message) error {
	records := make([]*sarama.ProducerMessage, len(msgs))
	for i, m := range msgs {
		records[i] = &sarama.ProducerMessage{Topic: m.Topic, Value: sarama.ByteEncoder(m.Value), Headers: m.Headers}
		if m.Key != nil {
			records[i].Key = sarama.ByteEncoder(m.Key)
		}
	}
	if err := p.producer.SendMessages(records); err != nil {
		return fmt.Errorf("kafka: send %d messages: %w", len(records), classify(err))
	}
	return nil
}

// Close closes the producer.
func (p *Producer) Close() error {
	return errors.Join(p.producer.Close(), p.client.Close())
}
