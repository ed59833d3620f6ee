package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/IBM/sarama"
)

// Client is a connection to the cluster for metadata, offsets and reading.
type Client struct {
	cfg      Config
	sc       sarama.Client
	consumer sarama.Consumer
	admin    sarama.ClusterAdmin
}

// Connect opens a client of the brokers in cfg.
func Connect(cfg Config) (*Client, error) {
	sc, err := cfg.sarama()
	if err != nil {
		return nil, err
	}
	// Input may come from transactional producers: never read what they
	// aborted.
	sc.Consumer.IsolationLevel = sarama.ReadCommitted
	sc.Consumer.Return.Errors = true
	// Asking about a topic must never create it (a typo would become a
	// one-partition topic).
	sc.Metadata.AllowAutoTopicCreation = false
	// Messages read ahead of the pipeline; of web pages, 256 are some 7 MB.
	sc.ChannelBufferSize = 256
	client, err := cfg.connect(sc)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	c := &Client{cfg: cfg, sc: client}
	if c.consumer, err = sarama.NewConsumerFromClient(client); err == nil {
		c.admin, err = sarama.NewClusterAdminFromClient(client)
	}
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("kafka: connect to %v: %w", cfg.Brokers, err)
	}
	return c, nil
}

// Close closes the client and everything read through it.
func (c *Client) Close() error {
	return errors.Join(c.consumer.Close(), c.sc.Close())
}

// Partitions returns how many partitions topic has; the error wraps
// ErrNoTopic when it does not exist.
func (c *Client) Partitions(topic string) (int32, error) {
	if err := c.sc.RefreshMetadata(topic); err != nil {
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			return 0, fmt.Errorf("%w: %q", ErrNoTopic, topic)
		}
		return 0, fmt.Errorf("kafka: metadata of topic %q: %w", topic, err)
	}
	ps, err := c.sc.Partitions(topic)
	if err != nil {
		return 0, fmt.Errorf("kafka: partitions of topic %q: %w", topic, err)
	}
	return int32(len(ps)), nil
}

// PartitionCount returns a function that reads topic's partition count
// afresh from the brokers at each call.
func (c *Client) PartitionCount(topic string) func(context.Context) (int32, error) {
	return func(context.Context) (int32, error) { return c.Partitions(topic) }
}

// StartOffset names where a partition never read before starts.
type StartOffset string

const (
	Earliest StartOffset = "earliest"
	Latest   StartOffset = "latest"
)

// Offset returns the partition's oldest retained offset (Earliest) or the
// offset its next message will get (Latest, the high-water mark).
func (c *Client) Offset(topic string, partition int32, which StartOffset) (int64, error) {
	at := sarama.OffsetOldest
	if which == Latest {
		at = sarama.OffsetNewest
	}
	off, err := c.sc.GetOffset(topic, partition, at)
	if err != nil {
		return 0, fmt.Errorf("kafka: %s offset of %s/%d: %w", which, topic, partition, err)
	}
	return off, nil
}

// Committed returns the consumer group's committed offset for a partition:
// the next offset to read, found=false when the group has none.
func (c *Client) Committed(group, topic string, partition int32) (offset int64, found bool, err error) {
	resp, err := c.admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {partition}})
	if err == nil && resp.Err != sarama.ErrNoError {
		err = resp.Err
	}
	if errors.Is(err, sarama.ErrGroupIDNotFound) {
		return 0, false, nil // some brokers say so of a group that never committed
	}
	if err != nil {
		return 0, false, fmt.Errorf("kafka: committed offset of group %q on %s/%d: %w", group, topic, partition, err)
	}
	block := resp.GetBlock(topic, partition)
	if block == nil || block.Offset < 0 {
		return 0, false, nil
	}
	if block.Err != sarama.ErrNoError {
		return 0, false, fmt.Errorf("kafka: committed offset of group %q on %s/%d: %w", group, topic, partition, block.Err)
	}
	return block.Offset, true, nil
}

// EnsureTopic creates topic with partitions unless it exists.
func (c *Client) EnsureTopic(topic string, partitions int32) error {
	err := c.admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: -1}, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return fmt.Errorf("kafka: create topic %q: %w", topic, err)
	}
	return nil
}

// Lag returns a consumer group's lag on each partition of topic that it
// committed an offset for: the high-water mark less the committed offset.
// It asks each broker once for the high-water marks of the partitions it
// leads, so pools of thousands of partitions cost a few requests.
func (c *Client) Lag(group, topic string, partitions int32) (map[int32]int64, error) {
	all := make([]int32, partitions)
	for p := range all {
		all[p] = int32(p)
	}
	resp, err := c.admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: all})
	if err == nil && resp.Err != sarama.ErrNoError {
		err = resp.Err
	}
	if errors.Is(err, sarama.ErrGroupIDNotFound) {
		return map[int32]int64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: committed offsets of group %q on %s: %w", group, topic, err)
	}
	ends, err := c.highWaterMarks(topic, all)
	if err != nil {
		return nil, err
	}
	lag := map[int32]int64{}
	for _, p := range all {
		if b := resp.GetBlock(topic, p); b != nil && b.Err == sarama.ErrNoError && b.Offset >= 0 {
			lag[p] = max(0, ends[p]-b.Offset)
		}
	}
	return lag, nil
}

// highWaterMarks returns the next offset of each partition, asking each
// leader once for all of its partitions.
func (c *Client) highWaterMarks(topic string, partitions []int32) (map[int32]int64, error) {
	byLeader := map[*sarama.Broker]*sarama.OffsetRequest{}
	for _, p := range partitions {
		b, err := c.sc.Leader(topic, p)
		if err != nil {
			return nil, fmt.Errorf("kafka: leader of %s/%d: %w", topic, p, err)
		}
		req, ok := byLeader[b]
		if !ok {
			req = &sarama.OffsetRequest{Version: 1}
			byLeader[b] = req
		}
		req.AddBlock(topic, p, sarama.OffsetNewest, 1)
	}
	ends := make(map[int32]int64, len(partitions))
	for b, req := range byLeader {
		resp, err := b.GetAvailableOffsets(req)
		if err != nil {
			return nil, fmt.Errorf("kafka: high-water marks of %s from broker %d: %w", topic, b.ID(), err)
		}
		for p, block := range resp.Blocks[topic] {
			if block.Err != sarama.ErrNoError {
				return nil, fmt.Errorf("kafka: high-water mark of %s/%d: %w", topic, p, block.Err)
			}
			ends[p] = block.Offset
		}
	}
	return ends, nil
}
