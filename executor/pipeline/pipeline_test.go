package pipeline_test

import (
	"database/sql"
	stdjson "encoding/json"
	"errors"
	"sync/atomic"

	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/fencing"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/metrics"
	"github.com/docexec/docexec/executor/pipeline"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/executor/store"
	"github.com/docexec/docexec/internal/testenv"
)

// harness is one partition's world: kfake, the real Redis and PostgreSQL.
type harness struct {
	t        *testing.T
	cfg      kafka.Config
	client   *kafka.Client
	producer *kafka.Producer
	redis    rueidis.Client
	store    *store.Store
	// down, when set, makes PostgreSQL unreachable while it holds true.
	down   *atomic.Bool
	dsn    string
	opts   pipeline.Options
	inputs [][]byte // every input value, in offset order
	// metrics is where the harness's executors count; a fresh registry.
	metrics    *prometheus.Registry
	registered *metrics.Metrics
	// executors are those the harness built, whose counts it adds up.
	executors []*pipeline.Engine
}

func newHarness(t *testing.T) *harness {
	return newHarnessOn(t, testenv.Kafka(t, 1, "in", "out", "dlq"))
}

// newHarnessOn is newHarness on brokers that hold the topics already.
func newHarnessOn(t *testing.T, brokers []string) *harness {
	cfg := kafka.Config{Brokers: brokers}
	client, err := kafka.Connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	producer, err := kafka.NewProducer(cfg, kafka.DefaultMaxMessageBytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { producer.Close() })
	dsn := testenv.Postgres(t)
	st, err := store.OpenPostgres(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, cfg: cfg, client: client, producer: producer, redis: testenv.Redis(t), store: st, dsn: dsn,
		opts: pipeline.Options{Pool: fmt.Sprintf("p%x", rand.Uint64()), InputTopic: "in", OutputTopic: "out", DeadLetterTopic: "dlq",
			Group: "g", BatchSize: 64, SyncInterval: 50 * time.Millisecond},
		metrics: prometheus.NewRegistry()}
}

func (h *harness) produce(values ...[]byte) {
	h.t.Helper()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Topic: "in", Value: v}
	}
	if err := h.producer.Send(context.Background(), msgs); err != nil {
		h.t.Fatal(err)
	}
	h.inputs = append(h.inputs, values...)
}

// executor returns an executor of the harness's partition.
func (h *harness) executor() *pipeline.Engine {
	json, _ := codec.New("json")
	e := pipeline.New(h.opts, pipeline.Deps{
		KafkaConfig: h.cfg, Kafka: h.client, Store: h.storeOrDown(), Codec: json,
		State:   state.New(h.redis, state.Options{Pool: h.opts.Pool, Partition: h.opts.Partition}),
		Metrics: h.partitionMetrics(),
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	h.executors = append(h.executors, e)
	return e
}

// counts adds up the counts of the harness's executors.
func (h *harness) counts() pipeline.Counts {
	var c pipeline.Counts
	for _, e := range h.executors {
		c = c.Plus(e.Counts())
	}
	return c
}

// partitionMetrics registers the executor metrics once and returns the
// partition's.
func (h *harness) partitionMetrics() *metrics.Partition {
	if h.registered == nil {
		h.registered = metrics.New(h.metrics)
	}
	return h.registered.Partition(h.opts.Pool, h.opts.Partition)
}

// batches returns how many batches the harness's executors processed.
func (h *harness) batches() uint64 {
	h.t.Helper()
	families, err := h.metrics.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "docexec_batch_duration_seconds" {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// start runs an executor until the returned stop is called; stop returns
// Run's error.
func (h *harness) start() (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	e := h.executor()
	done := make(chan error, 1)
	go func() { done <- terms(ctx, e) }()
	return func() error { cancel(); return <-done }
}

// terms runs terms of e as partition.Lead does without an election: a term
// that lost Redis's state is followed by another, which recovers.
func terms(ctx context.Context, e *pipeline.Engine) error {
	for {
		err := e.Run(ctx)
		if !errors.Is(err, fencing.ErrLost) || ctx.Err() != nil {
			return err
		}
	}
}

func (h *harness) storeOrDown() pipeline.Store {
	if h.down == nil {
		return h.store
	}
	return &downable{Store: h.store, down: h.down}
}

// downable is PostgreSQL that can be made unreachable.
type downable struct {
	*store.Store
	down *atomic.Bool
}

var errDown = errors.New("connection refused (test)")

func (d *downable) Save(ctx context.Context, states []document.Document, mark *store.Watermark) error {
	if d.down.Load() {
		return errDown
	}
	return d.Store.Save(ctx, states, mark)
}

func (d *downable) Load(ctx context.Context, urls []string) (map[string]document.Document, error) {
	if d.down.Load() {
		return nil, errDown
	}
	return d.Store.Load(ctx, urls)
}

// runToEnd runs an executor until every input is committed, then stops it
// gracefully.
func (h *harness) runToEnd() {
	h.t.Helper()
	stop := h.start()
	h.waitCommitted()
	if err := stop(); err != nil {
		h.t.Fatal(err)
	}
}

// waitCommitted waits until the group committed every input.
func (h *harness) waitCommitted() {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		off, _, err := h.client.Committed("g", "in", 0)
		if err != nil {
			h.t.Fatal(err)
		}
		if off == int64(len(h.inputs)) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("committed offset %d, want %d", off, len(h.inputs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// read returns the committed messages of a topic's partition 0.
func (h *harness) read(topic string) [][]byte {
	var out [][]byte
	for _, r := range h.records(topic) {
		out = append(out, r.Value)
	}
	return out
}

// records returns the committed records of a topic's partition 0: all of
// them once the executor stopped, as read_committed hides nothing then.
func (h *harness) records(topic string) []kafka.Record {
	h.t.Helper()
	return h.recordsOf(topic, 0)
}

// recordsOf is records of another partition.
func (h *harness) recordsOf(topic string, partition int32) []kafka.Record {
	h.t.Helper()
	r, err := h.client.Read(kafka.ReadOptions{Topic: topic, Partition: partition, MaxRecords: 1000})
	if err != nil {
		h.t.Fatal(err)
	}
	defer r.Close()
	var out []kafka.Record
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		batch, err := r.Poll(ctx)
		cancel()
		out = append(out, batch...)
		if err != nil {
			return out
		}
	}
}

func (h *harness) emitted() []document.Document {
	json, _ := codec.New("json")
	var out []document.Document
	for _, v := range h.read("out") {
		d, err := json.Decode(v)
		if err != nil {
			h.t.Fatalf("output %q: %v", v, err)
		}
		d.FirstFetchTime = firstFetchTime(h.t, v)
		out = append(out, d)
	}
	return out
}

// reference returns the emissions of the Go merge over the inputs and the
// final states.
func (h *harness) reference() ([]document.Document, map[string]document.Document) {
	json, _ := codec.New("json")
	states := map[string]document.Document{}
	var emits []document.Document
	for _, v := range h.inputs {
		u, err := json.Decode(v)
		if err != nil {
			continue
		}
		cur, found := states[u.URL]
		next, changed := document.Apply(cur, found, u)
		states[u.URL] = next
		if changed {
			emits = append(emits, next)
		}
	}
	return emits, states
}

func updates(n, urls int, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed))
	var out [][]byte
	for range n {
		fetch := r.Uint64N(50)
		out = append(out, fmt.Appendf(nil, `{"url":"https://u%d.example/","pubDate":%d,"fetchTime":%d,"text":"v%d"}`, r.IntN(urls), r.Uint64N(9), fetch, fetch))
	}
	return out
}

func TestAStreamIsMergedPublishedAndSynced(t *testing.T) {
	h := newHarness(t)
	h.produce(updates(1500, 60, 1)...)
	h.produce([]byte(`{not json`), []byte(`{"url":"","fetchTime":1}`))
	h.produce(updates(500, 60, 2)...)
	h.runToEnd()

	h.checkExactlyTheGoMerge()
	dead := h.records("dlq")
	if len(dead) != 2 || string(dead[0].Value) != `{not json` || string(dead[1].Value) != `{"url":"","fetchTime":1}` {
		t.Fatalf("dead letters %+v, want the two bad lines", dead)
	}
	headers := map[string]string{}
	for _, hd := range dead[1].Headers {
		headers[string(hd.Key)] = string(hd.Value)
	}
	if headers[pipeline.HeaderReason] != "url: missing or empty" || headers[pipeline.HeaderTopic] != "in" ||
		headers[pipeline.HeaderPartition] != "0" || headers[pipeline.HeaderOffset] != "1501" {
		t.Fatalf("dead letter headers %v, want the reason and in/0 offset 1501", headers)
	}
	mark, found, err := h.store.Watermark(context.Background(), h.opts.Pool, 0)
	if err != nil || !found || mark.Offset != int64(len(h.inputs)) {
		t.Fatalf("watermark %+v (found %v, %v), want offset %d", mark, found, err, len(h.inputs))
	}
}

func TestBatchesAreBoundedByTheBytesOfTheirMessages(t *testing.T) {
	h := newHarness(t)
	h.opts.BatchBytes = 100 << 10
	h.opts.BatchWait = time.Hour // only the bounds close a batch
	text := strings.Repeat("x", 20<<10)
	for i := range 40 {
		h.produce(fmt.Appendf(nil, `{"url":"https://example.com/%d","fetchTime":1,"text":%q}`, i, text))
	}
	h.produce(fmt.Appendf(nil, `{"url":"https://example.com/big","fetchTime":1,"text":%q}`, strings.Repeat("y", 300<<10)))
	h.produce(updates(63, 10, 1)...) // and a last batch the count closes
	h.produce(updates(1, 10, 2)...)
	h.runToEnd()
	// Each 20 KB message takes a batch to ~20.5 KB more: the fifth closes it.
	// The large one is a batch of its own, then 64 small ones make one.
	if got := h.batches(); got != 40/5+1+1 {
		t.Fatalf("%d batches, want 10: 8 of five 20 KB messages, the 300 KB one alone, the 64 small ones", got)
	}
	_, final := h.reference()
	h.checkStored(final)
}

func TestARestartedExecutorGoesOnWhereTheLastStopped(t *testing.T) {
	h := newHarness(t)
	for i := range 3 {
		h.produce(updates(400, 40, uint64(10+i))...)
		h.runToEnd()
	}
	h.checkExactlyTheGoMerge() // a clean restart repeats nothing
}

func TestAfterARedisWipeStateIsRebuiltAndNeverGoesBackwards(t *testing.T) {
	h := newHarness(t)
	stop := h.start()
	h.produce(updates(800, 50, 20)...)
	h.waitCommitted()
	testenv.WipePool(t, h.redis, h.opts.Pool)
	h.produce(updates(800, 50, 21)...)
	h.waitCommitted()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	h.checkNothingWentBackwards()
}

func TestAppliedButUnpublishedUpdatesArePublishedAgain(t *testing.T) {
	for _, c := range []struct {
		name      string
		redisLost bool
		// watermark, when set, is where the last sync of PostgreSQL
		// stood: below the offsets whose effects it holds.
		watermark int64
	}{
		{name: "redis kept its state"},
		{name: "redis lost it, postgres synced everything", redisLost: true},
		{name: "redis lost it, postgres holds effects above its watermark", redisLost: true, watermark: 300},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.produce(updates(600, 30, 30)...)
			h.runToEnd()
			// As if the last transactions never committed: the group is
			// behind what was applied (and, gracefully stopped, synced).
			testenv.CommitOffset(t, h.cfg.Brokers, "g", "in", 0, 200)
			if c.redisLost {
				testenv.WipePool(t, h.redis, h.opts.Pool)
			}
			if c.watermark > 0 {
				db, err := sql.Open("pgx", h.dsn)
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				if _, err := db.Exec(`UPDATE docexec_partitions SET synced_offset = $1`, c.watermark); err != nil {
					t.Fatal(err)
				}
			}
			before := len(h.emitted())
			h.runToEnd()
			_, final := h.reference()
			got := h.emitted()
			urls := map[string]bool{}
			json, _ := codec.New("json")
			for _, v := range h.inputs[200:] {
				u, _ := json.Decode(v)
				urls[u.URL] = true
			}
			if len(got)-before != 400 {
				t.Fatalf("published %d states again, want one per update of offsets 200-599 (400)", len(got)-before)
			}
			for _, d := range got[before:] {
				if !urls[d.URL] || d != final[d.URL] {
					t.Fatalf("re-published %+v, want the current state of a url of offsets 200-599", d)
				}
			}
			checkNeverBackwards(t, got, final)
			h.checkStored(final)
		})
	}
}

func (h *harness) checkStored(final map[string]document.Document) {
	h.t.Helper()
	urls := make([]string, 0, len(final))
	for u := range final {
		urls = append(urls, u)
	}
	stored, err := h.store.Load(context.Background(), urls)
	if err != nil {
		h.t.Fatal(err)
	}
	for u, want := range final {
		if stored[u] != want {
			h.t.Fatalf("PostgreSQL has %+v for %s, want %+v", stored[u], u, want)
		}
	}
}

// checkExactlyTheGoMerge checks that the executor emitted exactly the states
// the Go merge of the inputs emits, in its order, and that PostgreSQL holds
// the final states, which it returns.
func (h *harness) checkExactlyTheGoMerge() map[string]document.Document {
	h.t.Helper()
	wantEmits, final := h.reference()
	if got := h.emitted(); !slices.Equal(got, wantEmits) {
		h.t.Fatalf("emitted %d states, want exactly the %d of the Go merge, in its order", len(got), len(wantEmits))
	}
	h.checkStored(final)
	return final
}

// checkNothingWentBackwards checks what a run that lost Redis must still
// leave: every url's emissions only move forward, to its final state, which
// PostgreSQL holds.
func (h *harness) checkNothingWentBackwards() {
	h.t.Helper()
	_, final := h.reference()
	checkNeverBackwards(h.t, h.emitted(), final)
	h.checkStored(final)
}

// checkNeverBackwards checks that every url's emissions only move forward
// in the merge order and end at the final state.
func checkNeverBackwards(t *testing.T, emitted []document.Document, final map[string]document.Document) {
	t.Helper()
	last := map[string]document.Document{}
	for i, d := range emitted {
		if prev, ok := last[d.URL]; ok && document.Merge(prev, d) != d {
			t.Fatalf("emission %d of %s went backwards: %+v after %+v", i, d.URL, d, prev)
		}
		last[d.URL] = d
	}
	for u, want := range final {
		if last[u] != want {
			t.Fatalf("last emission of %s is %+v, want %+v", u, last[u], want)
		}
	}
}

// firstFetchTime reads the field the decoder ignores on input.
func firstFetchTime(t *testing.T, v []byte) uint64 {
	var s struct {
		FirstFetchTime uint64 `json:"firstFetchTime"`
	}
	if err := stdjson.Unmarshal(v, &s); err != nil {
		t.Fatalf("output %q: %v", v, err)
	}
	return s.FirstFetchTime
}

// A partition that never ran may still meet urls with history: a grown
// topic moves urls between partitions, and pools may share a table.
func TestANewPartitionReadsThroughWhenStatesExistElsewhere(t *testing.T) {
	h := newHarness(t)
	stored := document.Document{URL: "https://moved.example/", PubDate: 1, FetchTime: 100, Text: "from partition 3", FirstFetchTime: 90}
	if err := h.store.Save(context.Background(), []document.Document{stored}, nil); err != nil {
		t.Fatal(err)
	}
	h.produce([]byte(`{"url":"https://moved.example/","pubDate":7,"fetchTime":50,"text":"older"}`))
	h.runToEnd()
	want := document.Document{URL: stored.URL, PubDate: 7, FetchTime: 100, Text: "from partition 3", FirstFetchTime: 50}
	if got := h.emitted(); len(got) != 1 || got[0] != want {
		t.Fatalf("emitted %+v, want the stored state merged: %+v", got, want)
	}
}

func TestProcessingGoesOnWhilePostgreSQLIsDownAndTheSyncCatchesUp(t *testing.T) {
	h := newHarness(t)
	h.down = &atomic.Bool{}
	stop := h.start()
	h.produce(updates(300, 20, 40)...)
	h.waitCommitted()
	h.down.Store(true)
	h.produce(updates(700, 20, 41)...)
	h.waitCommitted()                  // processed and published with PostgreSQL away
	time.Sleep(200 * time.Millisecond) // a few failed sync passes
	if mark, _, _ := h.store.Watermark(context.Background(), h.opts.Pool, 0); mark.Offset >= 1000 {
		t.Fatalf("watermark %d while PostgreSQL was down", mark.Offset)
	}
	h.down.Store(false)
	deadline := time.Now().Add(20 * time.Second)
	for {
		mark, _, err := h.store.Watermark(context.Background(), h.opts.Pool, 0)
		if err != nil {
			t.Fatal(err)
		}
		if mark.Offset == 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("watermark %d 20 s after PostgreSQL came back, want 1000", mark.Offset)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	h.checkExactlyTheGoMerge()
}

func TestStoppingWhileStartingIsAStop(t *testing.T) {
	h := newHarness(t)
	h.produce(updates(100, 10, 50)...)
	for range 20 { // stop at different points of the start
		stop := h.start()
		time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
		if err := stop(); err != nil {
			t.Fatalf("a stop while starting returned %v", err)
		}
	}
}

// smallTopics returns brokers whose output and dead-letter topics accept
// record batches of limit bytes (the input topic keeps the default).
func smallTopics(t *testing.T, limit int) []string {
	brokers := testenv.Kafka(t, 1, "in")
	for _, topic := range []string{"out", "dlq"} {
		testenv.CreateTopic(t, brokers, topic, 1, map[string]string{"max.message.bytes": strconv.Itoa(limit)})
	}
	return brokers
}

func headersOf(r kafka.Record) map[string]string {
	out := map[string]string{}
	for _, hd := range r.Headers {
		out[string(hd.Key)] = string(hd.Value)
	}
	return out
}

func TestAStateTooLargeToPublishIsDeadLetteredAndStillStored(t *testing.T) {
	h := newHarnessOn(t, smallTopics(t, 64000))
	big := strings.Repeat("a web page of many words, ", 4000) // 100 KB
	h.produce(
		[]byte(`{"url":"https://small.example/1","pubDate":1,"fetchTime":10,"text":"fits"}`),
		fmt.Appendf(nil, `{"url":"https://big.example/","pubDate":1,"fetchTime":10,"text":%q}`, big),
		[]byte(`{"url":"https://small.example/2","pubDate":1,"fetchTime":10,"text":"fits"}`),
		fmt.Appendf(nil, `{"url":"https://big.example/","pubDate":2,"fetchTime":20,"text":%q}`, big+"more"),
		[]byte(`{"url":"https://small.example/3","pubDate":1,"fetchTime":10,"text":"fits"}`),
	)
	h.runToEnd() // the partition goes on to its end

	var urls []string
	for _, d := range h.emitted() {
		urls = append(urls, d.URL)
	}
	if want := []string{"https://small.example/1", "https://small.example/2", "https://small.example/3"}; !slices.Equal(urls, want) {
		t.Fatalf("published %v, want %v", urls, want)
	}
	dead := h.records("dlq")
	if len(dead) != 2 {
		t.Fatalf("%d dead letters, want one per state too large", len(dead))
	}
	for i, r := range dead {
		hd := headersOf(r)
		if string(r.Key) != "https://big.example/" || len(r.Value) != 0 || !strings.Contains(hd[pipeline.HeaderReason], "state too large to publish") ||
			!strings.Contains(hd[pipeline.HeaderReason], "max.message.bytes 64000") || hd[pipeline.HeaderOffset] != []string{"1", "3"}[i] {
			t.Errorf("dead letter %d: key %q, %d bytes, headers %v", i, r.Key, len(r.Value), hd)
		}
	}
	h.checkDeadLetters(map[metrics.DeadLetterReason]float64{metrics.TooLarge: 2})
	_, final := h.reference()
	h.checkStored(final) // the big state is in PostgreSQL, whole
}

// checkDeadLetters asserts the dead letters counted by reason in the
// metrics, and in all in the executors' counts.
func (h *harness) checkDeadLetters(want map[metrics.DeadLetterReason]float64) {
	h.t.Helper()
	var all float64
	for _, r := range metrics.DeadLetterReasons {
		if got := testutil.ToFloat64(h.partitionMetrics().DeadLettered[r]); got != want[r] {
			h.t.Errorf("%v dead letters counted as %s, want %v", got, r, want[r])
		}
		all += want[r]
	}
	if got := h.counts().DeadLettered; float64(got) != all {
		h.t.Errorf("the executors count %d dead letters, want %v", got, all)
	}
}

// TestCountsSayWhatTheExecutorDid: what an executor reports to whoever runs
// it (docexec local's summary) is what it read and published.
func TestCountsSayWhatTheExecutorDid(t *testing.T) {
	h := newHarness(t)
	update := []byte(`{"url":"https://a.example/","pubDate":1,"fetchTime":10,"text":"a"}`)
	h.produce(update, update, // the duplicate changes nothing
		[]byte(`{"url":"https://a.example/","pubDate":1,"fetchTime":20,"text":"b"}`), []byte(`not json`))
	h.runToEnd()
	if got := h.emitted(); len(got) != 2 {
		t.Fatalf("emitted %v, want the two changes", got)
	}
	if got, want := h.counts(), (pipeline.Counts{In: 4, Unchanged: 1, Emitted: 2, DeadLettered: 1}); got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
	h.checkDeadLetters(map[metrics.DeadLetterReason]float64{metrics.BadInput: 1})
}

func TestABadMessageTooLargeForTheDeadLetterTopicLeavesItsValueOut(t *testing.T) {
	h := newHarnessOn(t, smallTopics(t, 64000))
	bad := []byte(`{"url":"https://a.example/","text":"` + strings.Repeat("x", 100000)) // unterminated
	h.produce(bad, []byte(`{"url":"https://a.example/","pubDate":1,"fetchTime":2,"text":"ok"}`))
	h.runToEnd()
	dead := h.records("dlq")
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	hd := headersOf(dead[0])
	if len(dead[0].Value) != 0 || !strings.HasPrefix(hd[pipeline.HeaderReason], "not JSON") || !strings.Contains(hd[pipeline.HeaderReason], "left out") ||
		hd[pipeline.HeaderTopic] != "in" || hd[pipeline.HeaderOffset] != "0" {
		t.Fatalf("dead letter of %d bytes, headers %v; want no value, the reason, and where the message is", len(dead[0].Value), hd)
	}
	if got := h.emitted(); len(got) != 1 {
		t.Fatalf("emitted %v, want the good update's state", got)
	}
	h.checkDeadLetters(map[metrics.DeadLetterReason]float64{metrics.BadInput: 1})
}

func TestAnEightKilobyteURLGoesThroughRedisTheSyncAndPostgreSQL(t *testing.T) {
	h := newHarness(t)
	long := "https://search.example/?q=" + strings.Repeat("%E6%97%A5%E6%9C%AC+caf%C3%A9+", 300)
	long = long[:8<<10]
	for i, fetch := range []int{20, 10, 30, 20} {
		h.produce(fmt.Appendf(nil, `{"url":%q,"pubDate":%d,"fetchTime":%d,"text":"v%d"}`, long, i, fetch, fetch))
	}
	h.runToEnd()
	final := h.checkExactlyTheGoMerge()
	st := state.New(h.redis, state.Options{Pool: h.opts.Pool, Partition: 0})
	if got, err := st.Get(context.Background(), long); err != nil || got[long] != final[long] {
		t.Fatalf("Redis holds %+v (%v), want %+v", got[long], err, final[long])
	}
}

// TestAStateTheFinalSyncCannotStoreIsDeadLetteredAndTheStopIsClean forces
// PostgreSQL to refuse one state (a constraint) in the sync that runs when
// the executor stops: the stop is still clean, the rest is stored, and the
// state goes to the dead-letter topic.
func TestAStateTheFinalSyncCannotStoreIsDeadLetteredAndTheStopIsClean(t *testing.T) {
	h := newHarness(t)
	h.opts.SyncInterval = time.Hour // only the final sync runs
	db, err := sql.Open("pgx", h.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`ALTER TABLE documents ADD CONSTRAINT refuse CHECK (url NOT LIKE '%refuse-me%')`); err != nil {
		t.Fatal(err)
	}
	h.produce(updates(300, 40, 9)...)
	h.produce([]byte(`{"url":"https://refuse-me.example/","pubDate":1,"fetchTime":2,"text":"kept in Redis"}`))
	h.runToEnd() // fails on an error from the stop

	_, final := h.reference()
	refused := final["https://refuse-me.example/"]
	delete(final, refused.URL)
	h.checkStored(final)
	if got, _ := h.store.Load(context.Background(), []string{refused.URL}); len(got) != 0 {
		t.Fatalf("PostgreSQL stored %+v despite its constraint", got)
	}
	mark, _, _ := h.store.Watermark(context.Background(), h.opts.Pool, 0)
	if mark.Offset != int64(len(h.inputs)) {
		t.Fatalf("watermark %d, want %d: a refused state must not hold it back", mark.Offset, len(h.inputs))
	}
	dead := h.records("dlq")
	if len(dead) != 1 || string(dead[0].Key) != refused.URL || !strings.Contains(headersOf(dead[0])[pipeline.HeaderReason], "PostgreSQL refused") {
		t.Fatalf("dead letters %v, want one for the refused state", dead)
	}
	json, _ := codec.New("json")
	if got, err := json.Decode(dead[0].Value); err != nil || got.Text != refused.Text {
		t.Fatalf("the dead letter holds %q (%v), want the state", dead[0].Value, err)
	}
	h.checkDeadLetters(map[metrics.DeadLetterReason]float64{metrics.Refused: 1})
}

// TestAFencedTermIsCounted claims the partition with a second executor
// while the first leads: the first's term ends fenced, and is counted.
func TestAFencedTermIsCounted(t *testing.T) {
	h := newHarness(t)
	stopOld := h.start()
	h.produce(updates(100, 10, 1)...)
	h.waitCommitted()
	newer := h.executor()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- newer.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !newer.Ready() { // it claimed the partition
		if time.Now().After(deadline) {
			t.Fatal("the second executor never claimed the partition")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := stopOld(); fencing.Classify(err) != fencing.StandBy {
		t.Fatalf("the first term ended with %v, want fenced", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(h.partitionMetrics().Fenced); got != 1 {
		t.Fatalf("%v fenced terms counted, want 1", got)
	}
}

// ownRedis points the harness at a private redis-server, which the test
// may stop, start and roll back.
func (h *harness) ownRedis() *testenv.RedisServer {
	r := testenv.OwnRedis(h.t)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{r.Addr()}, DisableCache: true})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(c.Close)
	h.redis = c
	return r
}

// TestRedisComingBackOlderIsNoticedAndRecovered restores an older snapshot
// of Redis under a running executor, in the same epoch: its states miss
// updates that were applied, published and synced since. The executor must
// notice, recover, and never publish a state older than one it published.
func TestRedisComingBackOlderIsNoticedAndRecovered(t *testing.T) {
	for _, synced := range []bool{false, true} {
		t.Run(fmt.Sprintf("synced since the snapshot: %v", synced), func(t *testing.T) {
			h := newHarness(t)
			r := h.ownRedis()
			if !synced {
				h.opts.SyncInterval = time.Hour
			}
			stop := h.start()
			h.produce(updates(600, 40, 1)...)
			h.waitCommitted()
			r.Save(t) // the snapshot
			h.produce(updates(600, 40, 2)...)
			h.waitCommitted()
			if synced {
				h.waitSynced()
			}
			r.StopLosingSinceSave(t)
			r.Start(t) // back, as of the snapshot
			h.produce(updates(600, 40, 3)...)
			h.waitCommitted()
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			h.checkNothingWentBackwards()
		})
	}
}

// waitSynced waits until PostgreSQL's watermark covers every input.
func (h *harness) waitSynced() {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mark, _, err := h.store.Watermark(context.Background(), h.opts.Pool, 0)
		if err == nil && mark.Offset == int64(len(h.inputs)) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("watermark %d (%v), want %d", mark.Offset, err, len(h.inputs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestARedisThatMayEvictDirtyStatesIsNotLedOn(t *testing.T) {
	h := newHarness(t)
	r := h.ownRedis()
	if err := h.redis.Do(context.Background(), h.redis.B().ConfigSet().ParameterValue().ParameterValue("maxmemory-policy", "allkeys-lru").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	h.produce(updates(100, 10, 1)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := h.executor().Run(ctx)
	if !errors.Is(err, state.ErrEvicting) || !strings.Contains(err.Error(), "allkeys-lru") {
		t.Fatalf("Run returned %v, want ErrEvicting naming the policy", err)
	}
	if got, _, _ := h.client.Committed("g", "in", 0); got != 0 {
		t.Fatalf("committed offset %d: nothing may be processed on such a Redis", got)
	}
	r.Stop(t)
}

// TestAfterTheTopicGrowsNoStateLacksSyncedHistory grows the input topic
// from 2 to 3 partitions mid-stream. Urls move between partitions; one that
// arrives at a partition whose Redis copy was complete (it started on an
// empty database) must be read from PostgreSQL, not taken for new: no
// emission may lack history synced before it.
func TestAfterTheTopicGrowsNoStateLacksSyncedHistory(t *testing.T) {
	brokers := testenv.Kafka(t, 2, "in")
	for _, topic := range []string{"out", "dlq"} {
		testenv.CreateTopic(t, brokers, topic, 3, nil)
	}
	h := newHarnessOn(t, brokers)
	h.opts.SyncInterval = 50 * time.Millisecond
	m := metrics.New(prometheus.NewRegistry())
	readThrough := func() (n float64) {
		for p := range int32(3) {
			var d dto.Metric
			if err := m.Partition(h.opts.Pool, p).ReadThrough.(prometheus.Metric).Write(&d); err != nil {
				t.Fatal(err)
			}
			n += d.GetCounter().GetValue()
		}
		return n
	}
	run := func(p int32) func() error {
		opts := h.opts
		opts.Partition = p
		json, _ := codec.New("json")
		e := pipeline.New(opts, pipeline.Deps{
			KafkaConfig: h.cfg, Kafka: h.client, Store: h.store, Codec: json,
			State:   state.New(h.redis, state.Options{Pool: opts.Pool, Partition: p, PartitionCount: h.client.PartitionCount("in")}),
			Metrics: m.Partition(opts.Pool, p),
			Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- terms(ctx, e) }()
		return func() error { cancel(); return <-done }
	}
	const urls = 200
	history := map[string]uint64{} // the oldest fetch time of each url, synced before the growth
	var lines [][]byte
	for i := range urls {
		for v := range 3 {
			u := fmt.Sprintf("https://moving.example/%d", i)
			fetch := uint64(1000 + 10*i + v)
			lines = append(lines, fmt.Appendf(nil, `{"url":%q,"pubDate":1,"fetchTime":%d,"text":"old %d"}`, u, fetch, v))
			if v == 0 {
				history[u] = fetch
			}
		}
	}
	stops := []func() error{run(0), run(1)}
	h.produceKeyed(lines)
	h.waitAllCommitted(2)
	h.waitAllSynced(2)
	// Started on an empty database, both partitions are complete: no url
	// was looked up in PostgreSQL.
	if n := readThrough(); n != 0 {
		t.Fatalf("%v read-throughs before the growth: the partitions were not complete", n)
	}

	testenv.GrowTopic(t, brokers, "in", 3)
	stops = append(stops, run(2))
	lines = lines[:0]
	for i := range urls {
		u := fmt.Sprintf("https://moving.example/%d", i)
		lines = append(lines, fmt.Appendf(nil, `{"url":%q,"pubDate":2,"fetchTime":%d,"text":"new"}`, u, 5000+i))
	}
	grown, err := kafka.NewProducer(h.cfg, kafka.DefaultMaxMessageBytes) // sees three partitions
	if err != nil {
		t.Fatal(err)
	}
	defer grown.Close()
	msgs := make([]kafka.Message, len(lines))
	for i, l := range lines {
		msgs[i] = kafka.Message{Topic: "in", Key: fmt.Appendf(nil, "https://moving.example/%d", i), Value: l}
	}
	if err := grown.Send(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	h.inputs = append(h.inputs, lines...)
	h.waitAllCommitted(3)
	for _, stop := range stops {
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}

	json, _ := codec.New("json")
	moved := 0
	for p := range int32(3) {
		for _, r := range h.recordsOf("out", p) {
			d, err := json.Decode(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			if d.FetchTime < 5000 {
				continue // an emission of the history itself
			}
			moved++
			if got := firstFetchTime(t, r.Value); got != history[d.URL] {
				t.Fatalf("partition %d emitted %s with firstFetchTime %d: it lacks the history synced before (oldest %d)", p, d.URL, got, history[d.URL])
			}
		}
	}
	if moved != urls {
		t.Fatalf("%d emissions after the growth, want one per url", moved)
	}
	if readThrough() == 0 {
		t.Fatal("no url was read from PostgreSQL after the growth")
	}
	_, final := h.reference()
	h.checkStored(final)
}

// produceKeyed sends lines keyed by their url, as producers of the input
// topic do.
func (h *harness) produceKeyed(lines [][]byte) {
	h.t.Helper()
	json, _ := codec.New("json")
	msgs := make([]kafka.Message, len(lines))
	for i, l := range lines {
		d, err := json.Decode(l)
		if err != nil {
			h.t.Fatal(err)
		}
		msgs[i] = kafka.Message{Topic: "in", Key: []byte(d.URL), Value: l}
	}
	if err := h.producer.Send(context.Background(), msgs); err != nil {
		h.t.Fatal(err)
	}
	h.inputs = append(h.inputs, lines...)
}

// waitAllCommitted waits until the group committed the end of each of the
// input topic's first n partitions.
func (h *harness) waitAllCommitted(n int32) {
	h.t.Helper()
	h.waitAllAtEnd(n, "committed", func(p int32) (int64, error) {
		off, _, err := h.client.Committed("g", "in", p)
		return off, err
	})
}

// waitAllSynced waits until PostgreSQL's watermark of each of the first n
// partitions is the end of its input.
func (h *harness) waitAllSynced(n int32) {
	h.t.Helper()
	h.waitAllAtEnd(n, "watermark", func(p int32) (int64, error) {
		mark, _, err := h.store.Watermark(context.Background(), h.opts.Pool, p)
		return mark.Offset, err
	})
}

// waitAllAtEnd waits until offsetOf (what it is called in a failure) is the
// end of each of the input topic's first n partitions.
func (h *harness) waitAllAtEnd(n int32, what string, offsetOf func(p int32) (int64, error)) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for p := range n {
		for {
			end, err := h.client.Offset("in", p, kafka.Latest)
			if err != nil {
				h.t.Fatal(err)
			}
			off, err := offsetOf(p)
			if err == nil && off == end {
				break
			}
			if time.Now().After(deadline) {
				h.t.Fatalf("partition %d: %s %d of %d (%v)", p, what, off, end, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// stallingStore is PostgreSQL whose Load, from call number stallAt on,
// waits until its context ends: a recovery that stalls mid-way, then dies.
type stallingStore struct {
	*store.Store
	calls   atomic.Int64 // the test watches them from its own goroutine
	stallAt int64
}

func (s *stallingStore) Load(ctx context.Context, urls []string) (map[string]document.Document, error) {
	if s.calls.Add(1) >= s.stallAt {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.Store.Load(ctx, urls)
}

// TestARecoveryCutShortStillPublishesWhatItOwes loses Redis while updates
// are applied and synced but not published (the committed offset is behind),
// then cuts the recovery short after its first batch. The next term must
// still publish the current state of every url of the unpublished range:
// PostgreSQL holds their effects already, so the merge alone would call
// them unchanged and publish nothing.
func TestARecoveryCutShortStillPublishesWhatItOwes(t *testing.T) {
	h := newHarness(t)
	h.opts.ShutdownTimeout = 500 * time.Millisecond
	var lines [][]byte
	for i := range 640 {
		lines = append(lines, fmt.Appendf(nil, `{"url":"https://u%d.example/","pubDate":1,"fetchTime":%d,"text":"v"}`, i, 10+i))
	}
	h.produce(lines...)
	h.runToEnd()
	h.waitSynced()
	// As if the last 320 were applied and synced but never published.
	const unpublished = 320
	w, err := kafka.NewWriter(h.cfg, kafka.WriterOptions{TransactionalID: kafka.TransactionalID(h.opts.Pool, "in", 0), Group: "g", InputTopic: "in"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Publish(context.Background(), nil, int64(len(lines)-unpublished)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// And as if the sync pass that stored them died before writing its
	// watermark: PostgreSQL holds their effects, above its watermark.
	db, err := sql.Open("pgx", h.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE docexec_partitions SET synced_offset = $1 WHERE pool = $2`, len(lines)-unpublished, h.opts.Pool); err != nil {
		t.Fatal(err)
	}
	testenv.WipePool(t, h.redis, h.opts.Pool)
	before := len(h.records("out"))

	// The recovery stalls at its second read from PostgreSQL and dies.
	stalling := &stallingStore{Store: h.store, stallAt: 2}
	e := pipeline.New(h.opts, pipeline.Deps{KafkaConfig: h.cfg, Kafka: h.client, Store: stalling, Codec: mustCodec(t),
		State:   state.New(h.redis, state.Options{Pool: h.opts.Pool, Partition: 0}),
		Metrics: metrics.New(prometheus.NewRegistry()).Partition(h.opts.Pool, 0), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for stalling.calls.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done

	h.runToEnd() // a whole term
	published := map[string]bool{}
	for _, r := range h.records("out")[before:] {
		published[string(r.Key)] = true
	}
	for i := len(lines) - unpublished; i < len(lines); i++ {
		if u := fmt.Sprintf("https://u%d.example/", i); !published[u] {
			t.Fatalf("the state of %s, changed by an unpublished update, was never published after the loss", u)
		}
	}
}

func mustCodec(t *testing.T) codec.Codec {
	c, err := codec.New("json")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// refuseProduce makes the broker refuse every transactional produce
// request (the executors' output) with a retriable error while refusing
// holds: publications fail and are retried, and nothing reaches the output.
func refuseProduce(c *kfake.Cluster, refusing *atomic.Bool) {
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		if !refusing.Load() {
			c.DropControl()
			return nil, nil, false
		}
		c.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		if req.TransactionID == nil {
			return nil, nil, false // the test's own input
		}
		return testenv.RefusedProduce(req, kerr.NotEnoughReplicas.Code), nil, true
	})
}

// perURL splits emissions by url, in order.
func perURL(emitted []document.Document) map[string][]document.Document {
	out := map[string][]document.Document{}
	for _, d := range emitted {
		out[d.URL] = append(out[d.URL], d)
	}
	return out
}

// TestALeaderDeadBetweenRedisAndKafkaLeavesOutputExactlyOnce lets a leader
// write batches to Redis that Kafka refuses to take, then stops it: the
// next leader must publish exactly what those batches would have — every
// url's emissions are those of an uninterrupted run, none twice, none
// missing.
func TestALeaderDeadBetweenRedisAndKafkaLeavesOutputExactlyOnce(t *testing.T) {
	cluster := testenv.KafkaCluster(t, 1, "in", "out", "dlq")
	h := newHarnessOn(t, cluster.ListenAddrs())
	h.opts.ShutdownTimeout = 300 * time.Millisecond
	stop := h.start()
	h.produce(updates(300, 30, 1)...)
	h.waitCommitted()

	var refusing atomic.Bool
	refusing.Store(true)
	refuseProduce(cluster, &refusing)
	h.produce(updates(300, 30, 2)...)
	st := state.New(h.redis, state.Options{Pool: h.opts.Pool, Partition: 0})
	deadline := time.Now().Add(30 * time.Second)
	for applied, _, _ := st.Applied(context.Background()); applied < 400; applied, _, _ = st.Applied(context.Background()) {
		if time.Now().After(deadline) {
			t.Fatalf("applied %d, want the new batches applied while Kafka refuses them", applied)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop() //nolint:errcheck // it cannot publish: dies with batches applied, unpublished
	refusing.Store(false)

	h.runToEnd() // the next leader
	wantEmits, final := h.reference()
	got, want := perURL(h.emitted()), perURL(wantEmits)
	for url, seq := range want {
		if !slices.Equal(got[url], seq) {
			t.Fatalf("%s: emitted %d states %+v, an uninterrupted run %d %+v", url, len(got[url]), got[url], len(seq), seq)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("emissions for %d urls, want %d", len(got), len(want))
	}
	h.checkStored(final)
}

// TestAPartitionsSlotMovedToAnotherRedisClusterNodeMidStreamLosesNothing
// reshards the slot that holds the partition's keys while the executor
// writes them: scripts meet ASK and TRYAGAIN while its keys are half moved,
// then MOVED. The output must be what an uninterrupted run gives.
func TestAPartitionsSlotMovedToAnotherRedisClusterNodeMidStreamLosesNothing(t *testing.T) {
	h := newHarness(t)
	cluster := testenv.OwnRedisCluster(t)
	h.redis = cluster.Client(t)
	h.produce(updates(3000, 2000, 40)...)
	stop := h.start()
	deadline := time.Now().Add(30 * time.Second)
	for off, _, _ := h.client.Committed("g", "in", 0); off < 300; off, _, _ = h.client.Committed("g", "in", 0) {
		if time.Now().After(deadline) {
			t.Fatalf("committed %d, want the stream under way before the slot moves", off)
		}
		time.Sleep(5 * time.Millisecond)
	}
	before, _, _ := h.client.Committed("g", "in", 0)
	cluster.MoveSlotOf(t, fmt.Sprintf("dx:{%s/0}:meta", h.opts.Pool))
	after, _, _ := h.client.Committed("g", "in", 0)
	t.Logf("committed offset %d when the slot began to move, %d when it had moved", before, after)
	h.produce(updates(3000, 2000, 41)...)
	h.waitCommitted()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	h.checkExactlyTheGoMerge()
}
