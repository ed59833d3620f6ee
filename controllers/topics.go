package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
	// Secrets reads the Secrets that pools name for Kafka's TLS and SASL.
	// Best uncached (the manager's API reader): a cache would list and
	// watch every Secret of the cluster, for reads once per Remember.
	Secrets client.Reader
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

// Describe reads the pool's topics, connecting as the pool's executors do:
// with its TLS and SASL settings and the contents of their Secrets.
func (k *KafkaTopics) Describe(ctx context.Context, pool *docexecv1.DocExecutorPool) (TopicInfo, error) {
	// Pools differ by namespace (their Secrets; the group carries it) and
	// by every setting of their Kafka spec.
	spec, err := json.Marshal(pool.Spec.Kafka)
	if err != nil {
		return TopicInfo{}, fmt.Errorf("kafka spec of DocExecutorPool %s/%s: %w", pool.Namespace, pool.Name, err)
	}
	key := consumerGroup(pool) + "/" + string(spec)
	k.mu.Lock()
	a, ok := k.recent[key]
	k.mu.Unlock()
	if ok && time.Since(a.at) < or(k.Remember, 10*time.Second) {
		return a.info, a.err
	}
	info, err := k.lookup(ctx, pool)
	k.mu.Lock()
	if k.recent == nil {
		k.recent = map[string]answer{}
	}
	k.recent[key] = answer{info: info, err: err, at: time.Now()}
	k.mu.Unlock()
	return info, err
}

func (k *KafkaTopics) lookup(ctx context.Context, pool *docexecv1.DocExecutorPool) (TopicInfo, error) {
	s := pool.Spec.Kafka
	cfg := kafka.Config{Brokers: s.Brokers, ClientID: "docexec-operator", Timeout: or(k.Timeout, 10*time.Second)}
	if err := k.authenticate(ctx, pool, &cfg); err != nil {
		return TopicInfo{}, err
	}
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

// authenticate sets cfg's TLS and SASL as the pool's spec says, with the
// certificates and password read from their Secrets: the same keys its
// executors get as files and environment.
func (k *KafkaTopics) authenticate(ctx context.Context, pool *docexecv1.DocExecutorPool, cfg *kafka.Config) error {
	s := pool.Spec.Kafka
	secrets := map[string]*corev1.Secret{} // each read once, however many keys it gives
	read := func(secret, key string) ([]byte, error) {
		if k.Secrets == nil {
			return nil, errors.New("controllers: KafkaTopics needs Secrets to read the Kafka credentials of pools")
		}
		sec, ok := secrets[secret]
		if !ok {
			sec = &corev1.Secret{}
			if err := k.Secrets.Get(ctx, client.ObjectKey{Namespace: pool.Namespace, Name: secret}, sec); err != nil {
				return nil, fmt.Errorf("kafka credentials: %w", err)
			}
			secrets[secret] = sec
		}
		v, ok := sec.Data[key]
		if !ok {
			return nil, fmt.Errorf("kafka credentials: Secret %s/%s has no key %s", pool.Namespace, secret, key)
		}
		return v, nil
	}
	var err error
	if s.TLS != nil {
		cfg.TLS.Enabled = true
		if s.TLS.SecretName != "" {
			if cfg.TLS.CA, err = read(s.TLS.SecretName, caKey); err != nil {
				return err
			}
		}
		if name := s.TLS.ClientCertSecretName; name != "" {
			if cfg.TLS.Cert, err = read(name, corev1.TLSCertKey); err != nil {
				return err
			}
			if cfg.TLS.Key, err = read(name, corev1.TLSPrivateKeyKey); err != nil {
				return err
			}
		}
	}
	if s.SASL != nil {
		password, err := read(s.SASL.PasswordSecretRef.Name, s.SASL.PasswordSecretRef.Key)
		if err != nil {
			return err
		}
		cfg.SASL = kafka.SASL{Mechanism: s.SASL.Mechanism, Username: s.SASL.Username, Password: string(password)}
	}
	return nil
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
