package controllers

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
	"github.com/docexec/docexec/executor/kafka"
)

// TopicInfo is what the operator reads of a pool's topics.
type TopicInfo struct {
	// Partitions is the input topic's partition count.
	Partitions int32
	// Problem says why the output or dead-letter topic cannot serve the
	// pool (missing, or fewer partitions than the input); empty when they
	// can.
	Problem string
	// Lag is the pool's consumer lag by partition (messages after its
	// committed offset), for the partitions that committed one.
	Lag map[int32]int64
}

// Topics reads a pool's topics.
type Topics interface {
	Describe(ctx context.Context, pool *docexecv1.DocExecutorPool) (TopicInfo, error)
}

// KafkaTopics reads pools' topics from the brokers, remembering each answer
// for a while: pools reconcile on every pod change, and status is not a
// metrics bus (lag changes in status at most once per Remember).
type KafkaTopics struct {
	// Timeout bounds one lookup; 10 s when zero.
	Timeout time.Duration
	// Remember is how long an answer is reused; 10 s when zero.
	Remember time.Duration

	mu     sync.Mutex
	recent map[string]answer
}

type answer struct {
	info TopicInfo
	err  error // failures are remembered too: a dead broker is not asked at every pass
	at   time.Time
}

// Describe reads the pool's topics. TLS uses the system's roots; SASL is
// not used: pools that need it set spec.partitions.
func (k *KafkaTopics) Describe(_ context.Context, pool *docexecv1.DocExecutorPool) (TopicInfo, error) {
	s := pool.Spec.Kafka
	key := strings.Join([]string{strings.Join(s.Brokers, ","), s.InputTopic, s.OutputTopic, s.DeadLetterTopic, consumerGroup(pool)}, "/")
	k.mu.Lock()
	a, ok := k.recent[key]
	k.mu.Unlock()
	if ok && time.Since(a.at) < or(k.Remember, 10*time.Second) {
		return a.info, a.err
	}
	info, err := k.lookup(pool)
	k.mu.Lock()
	if k.recent == nil {
		k.recent = map[string]answer{}
	}
	k.recent[key] = answer{info: info, err: err, at: time.Now()}
	k.mu.Unlock()
	return info, err
}

func (k *KafkaTopics) lookup(pool *docexecv1.DocExecutorPool) (TopicInfo, error) {
	s := pool.Spec.Kafka
	cfg := kafka.Config{Brokers: s.Brokers, ClientID: "docexec-operator", Timeout: or(k.Timeout, 10*time.Second)}
	cfg.TLS.Enabled = s.TLS != nil
	client, err := kafka.Connect(cfg)
	if err != nil {
		return TopicInfo{}, err
	}
	defer client.Close()
	switch err := client.CheckTopics(s.InputTopic, s.OutputTopic, s.DeadLetterTopic, 0); {
	case errors.Is(err, kafka.ErrTopology):
		// Said in status; without the input topic the count is unknown.
		info := TopicInfo{Problem: err.Error()}
		if n, err := client.Partitions(s.InputTopic); err == nil {
			info.Partitions = n
			return info, nil
		}
		return info, err
	case err != nil:
		return TopicInfo{}, err
	}
	n, err := client.Partitions(s.InputTopic)
	if err != nil {
		return TopicInfo{}, err
	}
	// Lag is for people; a group the operator may not read (ACLs), or a
	// partition without a leader, leaves it out, nothing else.
	lag, _ := client.Lag(consumerGroup(pool), s.InputTopic, n)
	return TopicInfo{Partitions: n, Lag: lag}, nil
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
