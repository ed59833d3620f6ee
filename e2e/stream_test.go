package e2e

import (
	"context"
	stdjson "encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/store"
	"github.com/docexec/docexec/internal/docgen"
)

// Topics of the cluster suite's pool.
const (
	inputTopic      = "doc-updates"
	outputTopic     = "doc-states"
	deadLetterTopic = "doc-updates-dead"
)

// updates makes n updates of urls web-like urls of one partition, out of
// order, with duplicates: texts and urls from internal/docgen (kilobytes
// of text in every script, urls up to 8 KB), fetch times drawn here so
// that every call merges into the states the earlier ones made.
func updates(r *rand.Rand, partition int32, urls, n int) []document.Document {
	pages := pagesOf(partition, urls)
	texts, err := docgen.New(docgen.Options{Seed: r.Uint64(), URLs: n/4 + 1, MaxMessageBytes: 128 << 10})
	if err != nil {
		panic(err) // constant options
	}
	out := make([]document.Document, 0, n)
	for u := range texts.Updates() {
		if len(out) == n {
			break
		}
		fetch := r.Uint64N(1_000_000) + 1
		d := document.Document{URL: pages[r.IntN(len(pages))], PubDate: r.Uint64N(fetch), FetchTime: fetch, Text: u.Text}
		out = append(out, d)
		if r.IntN(4) == 0 { // a redelivery
			out = append(out, d)
		}
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// pagesOf returns the urls of a partition: the same on every call, and
// none of another partition's.
func pagesOf(partition int32, n int) []string {
	gen, err := docgen.New(docgen.Options{Seed: uint64(partition) + 1, URLs: n, MaxVersions: 1, DuplicateRate: -1})
	if err != nil {
		panic(err)
	}
	var urls []string
	for u := range gen.Updates() {
		urls = append(urls, u.URL+"#p"+strconv.Itoa(int(partition)))
	}
	return urls
}

// stream produces updates to chosen partitions of the input topic (a url
// always goes to the same partition) and folds every update it sent into
// the oracle: the final state each url must reach.
type stream struct {
	t      testing.TB
	client *kgo.Client
	mu     sync.Mutex
	final  oracle
	// sequences are, per url, the states an uninterrupted leader emits:
	// one after each update that changes it, in the order sent.
	sequences map[string][]document.Document
	sent      int
}

func newStream(t testing.TB, brokers string) *stream {
	t.Helper()
	c, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.DefaultProduceTopic(inputTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &stream{t: t, client: c, final: oracle{}, sequences: map[string][]document.Document{}}
}

// send produces docs to partition and waits for the broker's acks.
func (s *stream) send(ctx context.Context, partition int32, docs []document.Document) error {
	records := make([]*kgo.Record, len(docs))
	for i, d := range docs {
		v, err := stdjson.Marshal(d) // its firstFetchTime (0) is ignored on input
		if err != nil {
			return err
		}
		records[i] = &kgo.Record{Key: []byte(d.URL), Value: v, Partition: partition}
	}
	if err := s.client.ProduceSync(ctx, records...).FirstErr(); err != nil {
		return fmt.Errorf("produce %d updates to partition %d: %w", len(docs), partition, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range docs {
		prev, seen := s.final[d.URL]
		s.final.add(d)
		if !seen || s.final[d.URL] != prev {
			s.sequences[d.URL] = append(s.sequences[d.URL], s.final[d.URL])
		}
	}
	s.sent += len(docs)
	return nil
}

func (s *stream) mustSend(partition int32, docs []document.Document) {
	s.t.Helper()
	if err := s.send(context.Background(), partition, docs); err != nil {
		s.t.Fatal(err)
	}
}

// tick sends one update of partition's tick url, newer than every one
// before, so that the leader must emit a new state: a heartbeat whose
// output shows the partition progressing.
func (s *stream) tick(ctx context.Context, partition int32) error {
	now := uint64(time.Now().UnixNano())
	return s.send(ctx, partition, []document.Document{{URL: fmt.Sprintf("https://p%d.docs.example/tick", partition),
		PubDate: 1, FetchTime: now, Text: fmt.Sprintf("tick %d — ✓", now)}})
}

// ticking sends a tick to each of partitions every interval until ctx
// ends; the returned function stops it and waits for it.
func (s *stream) ticking(partitions []int32, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			for _, p := range partitions {
				if err := s.tick(ctx, p); err != nil && ctx.Err() == nil {
					done <- err
					return
				}
			}
			select {
			case <-ctx.Done():
				done <- nil
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		s.t.Helper()
		cancel()
		if err := <-done; err != nil {
			s.t.Fatalf("ticking: %v", err)
		}
	}
}

// grow raises the partition count of topics on the broker.
func (s *stream) grow(count int32, topics ...string) {
	s.t.Helper()
	req := kmsg.NewPtrCreatePartitionsRequest()
	req.TimeoutMillis = 10000
	for _, topic := range topics {
		rt := kmsg.NewCreatePartitionsRequestTopic()
		rt.Topic, rt.Count = topic, count
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(context.Background(), s.client)
	if err != nil {
		s.t.Fatalf("create partitions: %v", err)
	}
	for _, rt := range resp.Topics {
		if rt.ErrorCode != 0 {
			s.t.Fatalf("create partitions of %s: error code %d", rt.Topic, rt.ErrorCode)
		}
	}
	// The producer learns of the new partitions with its next metadata.
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.client.ForceMetadataRefresh()
		err := s.tick(context.Background(), count-1)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("partition %d is not there to produce to: %v", count-1, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// outputs reads every committed state on the output topic (read_committed)
// as it arrives: the last state of each url, when each partition last
// progressed, and any state that went backwards.
type outputs struct {
	mu        sync.Mutex
	last      map[string]document.Document
	sequences map[string][]document.Document // every state of each url, in order
	arrivals  map[int32][]time.Time
	backwards []string
	count     int
}

func watchOutputs(t testing.TB, brokers string) *outputs {
	t.Helper()
	c, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(outputTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Fresh metadata: the topic grows during the suite.
		kgo.MetadataMinAge(time.Second), kgo.MetadataMaxAge(2*time.Second), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	o := &outputs{last: map[string]document.Document{}, sequences: map[string][]document.Document{}, arrivals: map[int32][]time.Time{}}
	json, _ := codec.New("json")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fetches := c.PollFetches(ctx)
			now := time.Now()
			fetches.EachRecord(func(r *kgo.Record) { o.add(json, r, now) })
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		c.Close()
	})
	return o
}

func (o *outputs) add(json codec.Codec, r *kgo.Record, at time.Time) {
	d, err := json.Decode(r.Value)
	var s struct{ FirstFetchTime uint64 }
	if err == nil {
		err = stdjson.Unmarshal(r.Value, &s)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.count++
	if err != nil {
		o.backwards = append(o.backwards, fmt.Sprintf("undecodable output at %d/%d: %v", r.Partition, r.Offset, err))
		return
	}
	d.FirstFetchTime = s.FirstFetchTime
	if prev, ok := o.last[d.URL]; ok && document.Merge(prev, d) != d {
		o.backwards = append(o.backwards, fmt.Sprintf("%s went backwards at %d/%d: fetchTime %d after %d", d.URL, r.Partition, r.Offset, d.FetchTime, prev.FetchTime))
	}
	o.last[d.URL] = d
	o.sequences[d.URL] = append(o.sequences[d.URL], d)
	o.arrivals[r.Partition] = append(o.arrivals[r.Partition], at)
}

// progressed counts the states that arrived on partition.
func (o *outputs) progressed(partition int32) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.arrivals[partition])
}

// gap is the longest time between two states of partition arriving within
// [from, to]: how long the partition made no progress.
func (o *outputs) gap(partition int32, from, to time.Time) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	var longest time.Duration
	prev := from
	for _, at := range o.arrivals[partition] {
		if at.Before(from) {
			continue
		}
		if at.After(to) {
			break
		}
		longest = max(longest, at.Sub(prev))
		prev = at
	}
	return longest
}

// checkAgainst waits until the last state of every url is the oracle's,
// then fails on any state that went backwards and on any url whose states
// are not exactly an uninterrupted leader's (none twice, none missing).
func (o *outputs) checkAgainst(c *cluster, s *stream, within time.Duration) {
	c.t.Helper()
	s.mu.Lock()
	final := make(map[string]document.Document, len(s.final))
	for u, d := range s.final {
		final[u] = d
	}
	sequences := make(map[string][]document.Document, len(s.sequences))
	for u, seq := range s.sequences {
		sequences[u] = slices.Clone(seq)
	}
	s.mu.Unlock()
	c.until(within, "the output reaches the oracle's states", func() error {
		o.mu.Lock()
		defer o.mu.Unlock()
		for u, want := range final {
			if got := o.last[u]; got != want {
				return fmt.Errorf("%s: last output has fetchTime %d, the oracle %d (of %d urls)", u, got.FetchTime, want.FetchTime, len(final))
			}
		}
		return nil
	})
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.backwards) > 0 {
		c.t.Fatalf("%d outputs went backwards, e.g. %s", len(o.backwards), o.backwards[0])
	}
	for u, want := range sequences {
		if got := o.sequences[u]; !slices.Equal(got, want) {
			c.t.Fatalf("%s: %d states published, an uninterrupted leader's are %d: %v\nwant %v", u, len(got), len(want), brief(got), brief(want))
		}
	}
}

// checkCommitted waits until the pool's consumer group committed every
// input of the partitions.
func checkCommitted(c *cluster, brokers, group string, partitions int32, within time.Duration) {
	c.t.Helper()
	client, err := kafka.Connect(kafka.Config{Brokers: []string{brokers}})
	if err != nil {
		c.t.Fatal(err)
	}
	defer client.Close()
	c.until(within, "every input is committed", func() error {
		for p := range partitions {
			end, err := client.Offset(inputTopic, p, kafka.Latest)
			if err != nil {
				return err
			}
			if off, _, err := client.Committed(group, inputTopic, p); err != nil || off != end {
				return fmt.Errorf("partition %d: committed %d of %d (%v)", p, off, end, err)
			}
		}
		return nil
	})
}

// checkPostgres waits until PostgreSQL holds the oracle's state of every
// url (it trails Redis by a sync interval).
func checkPostgres(c *cluster, dsn string, s *stream, within time.Duration) {
	c.t.Helper()
	st, err := store.OpenPostgres(context.Background(), dsn, store.Options{})
	if err != nil {
		c.t.Fatal(err)
	}
	defer st.Close()
	s.mu.Lock()
	final := make(map[string]document.Document, len(s.final))
	urls := make([]string, 0, len(s.final))
	for u, d := range s.final {
		final[u] = d
		urls = append(urls, u)
	}
	s.mu.Unlock()
	c.until(within, "PostgreSQL holds the oracle's states", func() error {
		stored, err := st.Load(context.Background(), urls)
		if err != nil {
			return err
		}
		for u, want := range final {
			if stored[u] != want {
				return fmt.Errorf("%s: stored fetchTime %d, the oracle %d", u, stored[u].FetchTime, want.FetchTime)
			}
		}
		return nil
	})
}
