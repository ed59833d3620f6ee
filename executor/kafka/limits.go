package kafka

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/IBM/sarama"
)

// DefaultMaxMessageBytes is the limit assumed when the brokers will not say
// theirs: below Kafka's default (1048588), so that it holds anywhere.
const DefaultMaxMessageBytes = 1000000

// ErrNoTopic means that a topic does not exist.
var ErrNoTopic = errors.New("kafka: no such topic")

// ErrTopology marks topics that cannot serve a partition: missing, or an
// output or dead-letter topic with fewer partitions than the input.
var ErrTopology = errors.New("unfit topics")

// CheckTopics checks that the input topic has the partition and that the
// output and dead-letter topics exist with as many partitions as the input
// (states go to the output partition of the input's number). Its errors
// wrap ErrTopology when a topic is wrong, not merely unreachable, and name
// the setting.
func (c *Client) CheckTopics(input, output, deadLetter string, partition int32) error {
	have, err := c.Partitions(input)
	if errors.Is(err, ErrNoTopic) {
		return fmt.Errorf("%w: kafka.inputTopic: topic %q does not exist", ErrTopology, input)
	}
	if err != nil {
		return err
	}
	if partition >= have {
		return fmt.Errorf("%w: partition: topic %q has %d partitions, no partition %d", ErrTopology, input, have, partition)
	}
	for _, t := range []struct{ setting, topic string }{{"kafka.outputTopic", output}, {"kafka.deadLetterTopic", deadLetter}} {
		n, err := c.Partitions(t.topic)
		switch {
		case errors.Is(err, ErrNoTopic):
			return fmt.Errorf("%w: %s: topic %q does not exist", ErrTopology, t.setting, t.topic)
		case err != nil:
			return err
		case n < have:
			return fmt.Errorf("%w: %s: topic %q has %d partitions, fewer than the %d of input topic %q", ErrTopology, t.setting, t.topic, n, have, input)
		}
	}
	return nil
}

// Sizes on the wire that the producer's count of a record leaves out: the
// v2 record batch header, and room to spare.
const (
	batchHeaderBytes = 61
	batchSlackBytes  = 64
)

// MaxMessageBytes returns the largest record batch that topic accepts: its
// max.message.bytes (DescribeConfigs), else the broker's message.max.bytes,
// else DefaultMaxMessageBytes when the brokers do not let us read either
// (they may deny DescribeConfigs). source says which.
func (c *Client) MaxMessageBytes(topic string) (limit int, source string, err error) {
	if _, err := c.Partitions(topic); err != nil {
		return 0, "", err
	}
	if v, err := c.config(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic}, "max.message.bytes"); err == nil {
		return v, "topic " + topic + " max.message.bytes", nil
	}
	if b, err := c.sc.Controller(); err == nil {
		res := sarama.ConfigResource{Type: sarama.BrokerResource, Name: strconv.Itoa(int(b.ID()))}
		if v, err := c.config(res, "message.max.bytes"); err == nil {
			return v, "broker message.max.bytes", nil
		}
	}
	return DefaultMaxMessageBytes, "default (the brokers did not tell)", nil
}

// config reads one integer setting of a resource.
func (c *Client) config(res sarama.ConfigResource, name string) (int, error) {
	res.ConfigNames = []string{name}
	entries, err := c.admin.DescribeConfig(res)
	if err != nil {
		return 0, fmt.Errorf("kafka: describe %s: %w", res.Name, err)
	}
	for _, e := range entries {
		if e.Name == name {
			v, err := strconv.Atoi(e.Value)
			if err != nil || v <= 0 {
				return 0, fmt.Errorf("kafka: %s of %s is %q", name, res.Name, e.Value)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("kafka: %s of %s not reported", name, res.Name)
}

// RecordBudget returns the largest record, as RecordBytes counts it, that a
// producer may send to topics accepting batches of limit bytes: the batch
// header is taken off, and the worst case growth of compression (data that
// does not compress comes out larger).
func RecordBudget(limit int, compression string) int {
	budget := limit - batchHeaderBytes - batchSlackBytes
	switch compression {
	case "snappy": // n + n/6 + 32 at worst
		budget = (budget - 32) * 6 / 7
	case "lz4": // n + n/255 + 16, plus the frame
		budget = (budget - 32) * 255 / 256
	case "gzip", "zstd": // a few bytes per block of 16 KB or more
		budget = budget - budget/1000 - 32
	}
	return max(budget, 1)
}

// RecordBytes is the size of m as the producer counts it against its
// budget (sarama's estimate of a v2 record).
func RecordBytes(m Message) int {
	var pm sarama.ProducerMessage
	toSarama(m, &pm, nil)
	return pm.ByteSize(2)
}
