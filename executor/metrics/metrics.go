// Package metrics defines the executor's Prometheus metrics, labelled by pool
// and partition so that one process (local mode) can serve many partitions.
package metrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DeadLetterReason is the class of a dead letter's reason: a small fixed
// set, so that the label costs a few series (the full reason is in the
// dead letter's header).
type DeadLetterReason string

// The classes of dead letters.
const (
	// BadInput: the input message does not decode into a document.
	BadInput DeadLetterReason = "bad_input"
	// TooLarge: the merged state is larger than the output topic takes.
	TooLarge DeadLetterReason = "too_large"
	// Refused: PostgreSQL refused to store the state.
	Refused DeadLetterReason = "refused"
)

// DeadLetterReasons are all the classes, in a fixed order.
var DeadLetterReasons = []DeadLetterReason{BadInput, TooLarge, Refused}

// Metrics is the set of executor metrics of one registry.
type Metrics struct {
	in, emitted, unchanged, deadLettered, readThrough, syncedRows, syncRefused, fenced *prometheus.CounterVec
	batchSeconds, redisSeconds, publishSeconds, syncSeconds                            *prometheus.HistogramVec
	consumerLag, syncLag, leader                                                       *prometheus.GaugeVec
	lagSeconds                                                                         *lagSeconds
}

// New registers the executor metrics with reg.
func New(reg prometheus.Registerer) *Metrics {
	labels := []string{"pool", "partition"}
	counter := func(name, help string, extra ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "docexec", Name: name, Help: help}, append(labels, extra...))
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
	lag := &lagSeconds{
		desc: prometheus.NewDesc("docexec_consumer_lag_seconds",
			"While input messages remain after the last committed one: seconds since that message's Kafka timestamp; 0 when caught up.",
			labels, nil),
		partitions: map[[2]string]*inputLag{},
	}
	reg.MustRegister(lag)
	return &Metrics{
		in:             counter("messages_in_total", "Input messages read and processed."),
		emitted:        counter("messages_emitted_total", "States published to the output topic (re-emissions after a restart included)."),
		unchanged:      counter("messages_unchanged_total", "Updates that changed nothing: duplicates and versions between the first and the last."),
		deadLettered:   counter("messages_dead_lettered_total", "Dead letters published, by reason: bad_input, too_large (to publish), refused (by PostgreSQL); the full reason is in their headers.", "reason"),
		readThrough:    counter("read_through_total", "Document states read from PostgreSQL because Redis lacked them."),
		syncedRows:     counter("synced_rows_total", "Document states written to PostgreSQL by the sync."),
		syncRefused:    counter("sync_refused_total", "Document states PostgreSQL refused to store (kept in Redis, dead-lettered)."),
		fenced:         counter("fenced_total", "Terms that ended because a newer executor claimed the partition."),
		batchSeconds:   histogram("batch_duration_seconds", "Time to decode and merge one batch (Redis included)."),
		redisSeconds:   histogram("redis_duration_seconds", "Time of the merge of one batch: reading the states it lacks (Redis, PostgreSQL), merging, writing them to Redis."),
		publishSeconds: histogram("publish_duration_seconds", "Time of one batch's Kafka transaction: its output, dead letters and offset, committed."),
		syncSeconds:    histogram("sync_duration_seconds", "Time of one sync pass to PostgreSQL."),
		consumerLag:    gauge("consumer_lag_messages", "Input messages after the last committed one (high-water mark minus next offset)."),
		syncLag:        gauge("sync_lag_offsets", "Applied offset minus the offset synced to PostgreSQL (its watermark)."),
		leader:         gauge("leader", "1 while this executor processes the partition."),
		lagSeconds:     lag,
	}
}

// Partition is the metrics of one partition.
type Partition struct {
	In, Emitted, Unchanged, ReadThrough, SyncedRows, SyncRefused, Fenced prometheus.Counter
	// DeadLettered has a counter for each of DeadLetterReasons.
	DeadLettered                                            map[DeadLetterReason]prometheus.Counter
	BatchSeconds, RedisSeconds, PublishSeconds, SyncSeconds prometheus.Observer
	SyncLag                                                 prometheus.Gauge

	leader, consumerLag prometheus.Gauge
	lag                 *inputLag
}

// Partition returns the metrics of pool's partition.
func (m *Metrics) Partition(pool string, partition int32) *Partition {
	l := prometheus.Labels{"pool": pool, "partition": strconv.Itoa(int(partition))}
	deadLettered := map[DeadLetterReason]prometheus.Counter{}
	for _, r := range DeadLetterReasons {
		deadLettered[r] = m.deadLettered.MustCurryWith(l).WithLabelValues(string(r))
	}
	return &Partition{
		In: m.in.With(l), Emitted: m.emitted.With(l), Unchanged: m.unchanged.With(l),
		ReadThrough: m.readThrough.With(l), SyncedRows: m.syncedRows.With(l), SyncRefused: m.syncRefused.With(l),
		Fenced: m.fenced.With(l), DeadLettered: deadLettered,
		BatchSeconds: m.batchSeconds.With(l), RedisSeconds: m.redisSeconds.With(l), PublishSeconds: m.publishSeconds.With(l),
		SyncSeconds: m.syncSeconds.With(l),
		SyncLag:     m.syncLag.With(l), leader: m.leader.With(l), consumerLag: m.consumerLag.With(l), lag: m.lagSeconds.partition(l["pool"], l["partition"]),
	}
}

// Led records that this executor starts (true) or stops processing the
// partition. A standby's lags read 0: the leader's say the partition's,
// and a stopped term's would otherwise stay, its lag in seconds growing.
func (p *Partition) Led(leading bool) {
	if leading {
		p.leader.Set(1)
		return
	}
	p.leader.Set(0)
	p.SyncLag.Set(0)
	p.Committed(0, 0, time.Time{})
}

// Committed records a committed batch: the input before next is processed
// and its output published; highWaterMark is the input's end as the batch
// saw it, and newest the Kafka timestamp of its last message.
func (p *Partition) Committed(next, highWaterMark int64, newest time.Time) {
	behind := max(0, highWaterMark-next)
	p.consumerLag.Set(float64(behind))
	p.lag.set(behind > 0, newest)
}

// inputLag is what a partition's consumer_lag_seconds is computed from, at
// each scrape: a partition that stops committing while behind shows its
// lag growing.
type inputLag struct {
	mu     sync.Mutex
	behind bool
	newest time.Time
}

func (l *inputLag) set(behind bool, newest time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.behind, l.newest = behind, newest
}

func (l *inputLag) seconds(now time.Time) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.behind || l.newest.IsZero() { // caught up, or a message without a timestamp
		return 0
	}
	return max(0, now.Sub(l.newest).Seconds())
}

// lagSeconds collects docexec_consumer_lag_seconds, which depends on the
// time of the scrape.
type lagSeconds struct {
	desc       *prometheus.Desc
	mu         sync.Mutex
	partitions map[[2]string]*inputLag // by pool, partition
}

func (c *lagSeconds) partition(pool, partition string) *inputLag {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := [2]string{pool, partition}
	if c.partitions[key] == nil {
		c.partitions[key] = &inputLag{}
	}
	return c.partitions[key]
}

// Describe implements prometheus.Collector.
func (c *lagSeconds) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *lagSeconds) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for key, l := range c.partitions {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, l.seconds(now), key[0], key[1])
	}
}
