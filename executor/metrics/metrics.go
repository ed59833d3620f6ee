// Package metrics defines the executor's Prometheus metrics, labelled by pool
// and partition so that one process (local mode) can serve many partitions.
package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics is the set of executor metrics of one registry.
type Metrics struct {
	in, emitted, unchanged, deadLettered, readThrough, syncedRows, syncRefused *prometheus.CounterVec
	batchSeconds, redisSeconds, publishSeconds, syncSeconds                    *prometheus.HistogramVec
	consumerLag, syncLag, leader                                               *prometheus.GaugeVec
}

// New registers the executor metrics with reg.
func New(reg prometheus.Registerer) *Metrics {
	labels := []string{"pool", "partition"}
	counter := func(name, help string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "docexec", Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	histogram := func(name, help string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "docexec", Name: name, Help: help,
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, labels)
		reg.MustRegister(h)
		return h
	}
	gauge := func(name, help string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "docexec", Name: name, Help: help}, labels)
		reg.MustRegister(g)
		return g
	}
	return &Metrics{
		in:             counter("messages_in_total", "Input messages read and processed."),
		emitted:        counter("messages_emitted_total", "States published to the output topic (re-emissions after a restart included)."),
		unchanged:      counter("messages_unchanged_total", "Updates that changed nothing: duplicates and versions between the first and the last."),
		deadLettered:   counter("messages_dead_lettered_total", "Dead letters published (bad input, states too large to publish, states PostgreSQL refused); the reason is in their headers."),
		readThrough:    counter("read_through_total", "Document states read from PostgreSQL because Redis lacked them."),
		syncedRows:     counter("synced_rows_total", "Document states written to PostgreSQL by the sync."),
		syncRefused:    counter("sync_refused_total", "Document states PostgreSQL refused to store (kept in Redis, dead-lettered)."),
		batchSeconds:   histogram("batch_duration_seconds", "Time to decode and merge one batch (Redis included)."),
		redisSeconds:   histogram("redis_duration_seconds", "Time of the merge of one batch: reading the states it lacks (Redis, PostgreSQL), merging, writing them to Redis."),
		publishSeconds: histogram("publish_duration_seconds", "Time of one batch's Kafka transaction: its output, dead letters and offset, committed."),
		syncSeconds:    histogram("sync_duration_seconds", "Time of one sync pass to PostgreSQL."),
		consumerLag:    gauge("consumer_lag_messages", "Input messages after the last one read (high-water mark minus next offset)."),
		syncLag:        gauge("sync_lag_offsets", "Applied offset minus the offset synced to PostgreSQL."),
		leader:         gauge("leader", "1 while this executor processes the partition."),
	}
}

// Partition is the metrics of one partition.
type Partition struct {
	In, Emitted, Unchanged, DeadLettered, ReadThrough, SyncedRows, SyncRefused prometheus.Counter
	BatchSeconds, RedisSeconds, PublishSeconds, SyncSeconds                    prometheus.Observer
	ConsumerLag, SyncLag, Leader                                               prometheus.Gauge
}

// Partition returns the metrics of pool's partition.
func (m *Metrics) Partition(pool string, partition int32) *Partition {
	l := prometheus.Labels{"pool": pool, "partition": strconv.Itoa(int(partition))}
	return &Partition{
		In: m.in.With(l), Emitted: m.emitted.With(l), Unchanged: m.unchanged.With(l),
		ReadThrough: m.readThrough.With(l), SyncedRows: m.syncedRows.With(l), SyncRefused: m.syncRefused.With(l),
		DeadLettered: m.deadLettered.With(l),
		BatchSeconds: m.batchSeconds.With(l), RedisSeconds: m.redisSeconds.With(l), PublishSeconds: m.publishSeconds.With(l),
		SyncSeconds: m.syncSeconds.With(l),
		ConsumerLag: m.consumerLag.With(l), SyncLag: m.syncLag.With(l), Leader: m.leader.With(l),
	}
}
