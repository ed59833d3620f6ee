package controllers

import (
	"context"
	"strings"
	"sync"
	"time"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
	"github.com/docexec/docexec/executor/kafka"
)

// KafkaTopics reads input topics' partition counts from the brokers,
// remembering each answer for a while: pools reconcile on every pod change.
type KafkaTopics struct {
	// Timeout bounds one lookup; 10 s when zero.
	Timeout time.Duration
	// Remember is how long an answer is reused; 10 s when zero.
	Remember time.Duration

	mu     sync.Mutex
	recent map[string]answer
}

type answer struct {
	partitions int32
	err        error // failures are remembered too: a dead broker is not asked at every pass
	at         time.Time
}

// TopicPartitions counts the partitions of the pool's input topic. TLS uses
// the system's roots; SASL is not used: pools that need it set
// spec.partitions.
func (k *KafkaTopics) TopicPartitions(_ context.Context, pool *docexecv1.DocExecutorPool) (int32, error) {
	key := strings.Join(pool.Spec.Kafka.Brokers, ",") + "/" + pool.Spec.Kafka.InputTopic
	k.mu.Lock()
	a, ok := k.recent[key]
	k.mu.Unlock()
	if ok && time.Since(a.at) < or(k.Remember, 10*time.Second) {
		return a.partitions, a.err
	}
	n, err := k.lookup(pool)
	k.mu.Lock()
	if k.recent == nil {
		k.recent = map[string]answer{}
	}
	k.recent[key] = answer{partitions: n, err: err, at: time.Now()}
	k.mu.Unlock()
	return n, err
}

func (k *KafkaTopics) lookup(pool *docexecv1.DocExecutorPool) (int32, error) {
	cfg := kafka.Config{Brokers: pool.Spec.Kafka.Brokers, ClientID: "docexec-operator", Timeout: or(k.Timeout, 10*time.Second)}
	cfg.TLS.Enabled = pool.Spec.Kafka.TLS != nil
	client, err := kafka.Connect(cfg)
	if err != nil {
		return 0, err
	}
	defer client.Close()
	return client.Partitions(pool.Spec.Kafka.InputTopic)
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
