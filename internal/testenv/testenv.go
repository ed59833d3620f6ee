// Package testenv connects integration tests to the real servers that
// hack/with-services.sh starts (their addresses arrive in DOCEXEC_TEST_*
// variables), to the in-process stand-ins of local mode, and to a test
// control plane (etcd + kube-apiserver) with our CRD; it builds the docexec
// binary for tests that run it.
//
// A test that needs a server is skipped under -short and fails, never skips,
// when the server is missing otherwise: a green run means it ran.
package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// need returns the value of the environment variable naming a server.
func need(t testing.TB, env, what string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("integration test: needs %s (not run with -short)", what)
	}
	v := os.Getenv(env)
	if v == "" {
		t.Fatalf("integration test needs %s: run `make test`, or start one and set %s", what, env)
	}
	return v
}

// RedisAddr returns the address of the test redis-server.
func RedisAddr(t testing.TB) string { return need(t, "DOCEXEC_TEST_REDIS", "a redis-server") }

// Redis returns a client of the test redis-server, closed when t ends.
// Tests keep apart by using their own key names (a unique pool name).
func Redis(t testing.TB) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{RedisAddr(t)}, DisableCache: true})
	if err != nil {
		t.Fatalf("connect to redis: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// MiniRedis returns a client of an in-process miniredis, the Redis of local
// mode, stopped when t ends.
func MiniRedis(t testing.TB) rueidis.Client {
	t.Helper()
	m := miniredis.RunT(t)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{m.Addr()}, DisableCache: true, ForceSingleClient: true})
	if err != nil {
		t.Fatalf("connect to miniredis: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// Postgres returns the DSN of a fresh schema of the test PostgreSQL server,
// dropped when t ends.
func Postgres(t testing.TB) string {
	t.Helper()
	dsn := need(t, "DOCEXEC_TEST_POSTGRES", "a PostgreSQL server")
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("connect to PostgreSQL at %s: %v", dsn, err)
	}
	schema := fmt.Sprintf("docexec_test_%x", rand.Uint64())
	if _, err := admin.Exec(`CREATE SCHEMA "` + schema + `"`); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(`DROP SCHEMA "` + schema + `" CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		admin.Close()
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("DOCEXEC_TEST_POSTGRES must be a postgres:// URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// PostgresDatabase returns the DSN of a new database of the test
// PostgreSQL server in the given encoding (such as LATIN1, which cannot
// hold every character a UTF-8 text has), dropped when t ends.
func PostgresDatabase(t testing.TB, encoding string) string {
	t.Helper()
	dsn := need(t, "DOCEXEC_TEST_POSTGRES", "a PostgreSQL server")
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("connect to PostgreSQL at %s: %v", dsn, err)
	}
	name := fmt.Sprintf("docexec_test_%x", rand.Uint64())
	if _, err := admin.Exec(`CREATE DATABASE "` + name + `" ENCODING '` + encoding + `' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(`DROP DATABASE "` + name + `" WITH (FORCE)`); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		admin.Close()
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("DOCEXEC_TEST_POSTGRES must be a postgres:// URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Kafka starts an in-process broker (franz-go's kfake: the real wire
// protocol) holding topics of the given partition count, closed when t ends,
// and returns its addresses.
func Kafka(t testing.TB, partitions int32, topics ...string) []string {
	return KafkaCluster(t, partitions, topics...).ListenAddrs()
}

// KafkaCluster is Kafka, returning the broker itself, whose control hooks
// inject failures.
func KafkaCluster(t testing.TB, partitions int32, topics ...string) *kfake.Cluster {
	t.Helper()
	return KafkaClusterWith(t, partitions, topics)
}

// KafkaClusterWith is KafkaCluster with more options: SASL users, TLS.
func KafkaClusterWith(t testing.TB, partitions int32, topics []string, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...)}, opts...)...)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// WipePool deletes every Redis key of a pool at once, as a Redis restart
// without persistence would, without touching other tests' keys (FLUSHALL
// would: packages run in parallel against the same server). It is one
// script per server, so no executor's script sees a partition half deleted.
func WipePool(t testing.TB, c rueidis.Client, pool string) {
	t.Helper()
	const wipe = `local keys = redis.call('KEYS', ARGV[1])
for i = 1, #keys, 1000 do redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys))) end
return #keys`
	for addr, node := range c.Nodes() { // each master of a cluster holds some
		err := node.Do(context.Background(), node.B().Eval().Script(wipe).Numkeys(0).Arg("dx:{"+pool+"/*").Build()).Error()
		if err != nil {
			t.Fatalf("delete the keys of pool %s on %s: %v", pool, addr, err)
		}
	}
}

// CreateTopic creates a topic with topic-level configs (such as
// max.message.bytes), as an operator of a real cluster would.
func CreateTopic(t testing.TB, brokers []string, topic string, partitions int32, configs map[string]string) {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, partitions, 1
	for k, v := range configs {
		c := kmsg.NewCreateTopicsRequestTopicConfig()
		c.Name, c.Value = k, kmsg.StringPtr(v)
		rt.Configs = append(rt.Configs, c)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), client)
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

// GrowTopic gives a topic more partitions, as an operator of a real cluster
// does (kafka-topics --alter --partitions).
func GrowTopic(t testing.TB, brokers []string, topic string, partitions int32) {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	req := kmsg.NewPtrCreatePartitionsRequest()
	rt := kmsg.NewCreatePartitionsRequestTopic()
	rt.Topic, rt.Count = topic, partitions
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10000
	resp, err := req.RequestWith(context.Background(), client)
	if err != nil {
		t.Fatalf("grow topic %s: %v", topic, err)
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil {
		t.Fatalf("grow topic %s: %v", topic, err)
	}
}

// CommitOffset sets a consumer group's committed offset of a partition, as
// a consumer outside any group generation (kafka-consumer-groups
// --reset-offsets) does.
func CommitOffset(t testing.TB, brokers []string, group, topic string, partition int32, offset int64) {
	t.Helper()
	// At the protocol of Kafka 2.8, as docexec speaks it: later versions
	// name topics by id.
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.MaxVersions(kversion.V2_8_0()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.Generation = group, -1
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset = partition, offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), client)
	if err != nil {
		t.Fatalf("commit offset %d of %s/%d for group %s: %v", offset, topic, partition, group, err)
	}
	if err := kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode); err != nil {
		t.Fatalf("commit offset %d of %s/%d for group %s: %v", offset, topic, partition, group, err)
	}
}
