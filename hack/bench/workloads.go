package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/internal/docgen"
)

// workload is what a measurement reads: n messages, bytes in all, in the
// partitions of topic.
type workload struct {
	topic      string
	partitions int32
	n          int
	bytes      int64
}

const messageSize = 220

// produce writes n updates of urls to a new topic of the given partitions
// (keyed by url), each url's versions out of order and about one in five
// duplicated; the same seed gives the same messages.
func produce(cfg kafka.Config, client *kafka.Client, topic string, partitions int32, n, urls int) (workload, error) {
	if err := client.EnsureTopic(topic, partitions); err != nil {
		return workload{}, err
	}
	p, err := kafka.NewProducer(cfg, kafka.DefaultMaxMessageBytes)
	if err != nil {
		return workload{}, err
	}
	defer p.Close()
	w := workload{topic: topic, partitions: partitions}
	r := rand.New(rand.NewPCG(1, 2))
	filler := strings.Repeat("lorem ipsum ", 12)
	msgs := make([]kafka.Message, 0, 2000)
	for i := range n {
		page := r.IntN(urls)
		u := fmt.Sprintf("https://site%d.example/articles/%d", page%50, page)
		fetch := uint64(1_790_000_000 + r.IntN(1_000_000))
		v := fmt.Appendf(nil, `{"url":%q,"pubDate":%d,"fetchTime":%d,"text":"%s%d"}`, u, fetch-3600, fetch, filler, i)
		msgs = append(msgs, kafka.Message{Topic: topic, Key: []byte(u), Value: v})
		if r.IntN(5) == 0 {
			msgs = append(msgs, msgs[len(msgs)-1])
		}
		if len(msgs) >= 1000 {
			if err := w.send(p, msgs[:1000]); err != nil {
				return workload{}, err
			}
			msgs = append(msgs[:0], msgs[1000:]...)
		}
	}
	return w, w.send(p, msgs)
}

func (w *workload) send(p *kafka.Producer, msgs []kafka.Message) error {
	for _, m := range msgs {
		w.n++
		w.bytes += int64(len(m.Value))
	}
	return p.Send(context.Background(), msgs)
}

// produceWeb writes realistic documents (internal/docgen) to a new topic
// of one partition.
func produceWeb(cfg kafka.Config, client *kafka.Client, topic string, bytes int64) (workload, error) {
	if err := client.EnsureTopic(topic, 1); err != nil {
		return workload{}, err
	}
	limit, _, err := client.MaxMessageBytes(topic)
	if err != nil {
		return workload{}, err
	}
	// Lines under 1,000,000 bytes fit a topic of Kafka's default limit
	// under every codec's worst case (see kafka.RecordBudget).
	gen, err := docgen.New(docgen.Options{Seed: 7, TotalBytes: bytes, MaxMessageBytes: 1_000_000})
	if err != nil {
		return workload{}, err
	}
	p, err := kafka.NewProducer(cfg, limit)
	if err != nil {
		return workload{}, err
	}
	defer p.Close()
	w := workload{topic: topic, partitions: 1}
	var msgs []kafka.Message
	for l := range gen.Lines() {
		msgs = append(msgs, kafka.Message{Topic: topic, Key: []byte(l.Update.URL), Value: l.JSON})
		if len(msgs) == 100 {
			if err := w.send(p, msgs); err != nil {
				return workload{}, err
			}
			msgs = msgs[:0]
		}
	}
	return w, w.send(p, msgs)
}

// consume reads partition 0 of a workload from the start in batches of up
// to batch messages, those read ahead already, handing each to handle,
// until all were read.
func consume(ctx context.Context, client *kafka.Client, w workload, handle func([]kafka.Record) error) error {
	r, err := client.Read(kafka.ReadOptions{Topic: w.topic, MaxRecords: batch})
	if err != nil {
		return err
	}
	defer r.Close()
	for read := 0; read < w.n; {
		records, err := r.Poll(ctx)
		if err != nil {
			return err
		}
		read += len(records)
		if err := handle(records); err != nil {
			return err
		}
	}
	return nil
}

// passthroughMain is (a) in a process of its own: it reads a one-partition
// workload and republishes every message, one transaction per batch (the
// executor's Kafka shape), no decoding and no state, then prints in
// nanoseconds the time between 10% and 90% of the messages published, the
// window the executors' rates are taken over.
func passthroughMain(args []string) error {
	fs := flag.NewFlagSet("passthrough", flag.ExitOnError)
	brokers := fs.String("brokers", "", "")
	topic := fs.String("topic", "", "")
	n := fs.Int("n", 0, "")
	out := fs.String("out", "", "")
	compression := fs.String("compression", "", "")
	cpuprofile := fs.String("cpuprofile", "", "")
	fs.Parse(args) //nolint:errcheck // ExitOnError
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx := context.Background()
	cfg := kafka.Config{Brokers: strings.Split(*brokers, ","), Compression: *compression}
	client, err := kafka.Connect(cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	if err := client.EnsureTopic(*out, 1); err != nil {
		return err
	}
	limit, _, err := client.MaxMessageBytes(*out)
	if err != nil {
		return err
	}
	w, err := kafka.NewWriter(cfg, kafka.WriterOptions{TransactionalID: "bench-" + *out, Group: "bench-" + *out, InputTopic: *topic, MaxMessageBytes: limit})
	if err != nil {
		return err
	}
	defer w.Close()
	var start, end time.Time
	published := 0
	err = consume(ctx, client, workload{topic: *topic, partitions: 1, n: *n}, func(ms []kafka.Record) error {
		msgs := make([]kafka.Message, len(ms))
		for i, m := range ms {
			msgs[i] = kafka.Message{Topic: *out, Key: m.Key, Value: m.Value}
		}
		if err := w.Publish(ctx, msgs, ms[len(ms)-1].Offset+1); err != nil {
			return err
		}
		published += len(ms)
		if start.IsZero() && published >= *n/10 {
			start = time.Now()
		}
		if end.IsZero() && published >= *n*9/10 {
			end = time.Now()
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Println(end.Sub(start).Nanoseconds())
	return nil
}

// naive is the original design: per message, read the url's state from
// Redis, merge in Go, write it back.
func naive(ctx context.Context, cfg kafka.Config, client *kafka.Client, redis rueidis.Client, work workload) (time.Duration, error) {
	if err := client.EnsureTopic("out-c", 1); err != nil {
		return 0, err
	}
	w, err := kafka.NewWriter(cfg, kafka.WriterOptions{TransactionalID: "bench-c", Group: "bench-c", InputTopic: work.topic})
	if err != nil {
		return 0, err
	}
	defer w.Close()
	c, _ := codec.New(codec.FormatJSON)
	start := time.Now()
	err = consume(ctx, client, work, func(ms []kafka.Record) error {
		var out []kafka.Message
		for _, m := range ms {
			u, err := c.Decode(m.Value)
			if err != nil {
				continue
			}
			key := "naive:" + u.URL
			var cur document.Document
			raw, err := redis.Do(ctx, redis.B().Get().Key(key).Build()).AsBytes()
			found := err == nil
			if err != nil && !rueidis.IsRedisNil(err) {
				return err
			}
			if found {
				if err := json.Unmarshal(raw, &cur); err != nil {
					return err
				}
			}
			next, changed := document.Apply(cur, found, u)
			if !changed {
				continue
			}
			b, _ := json.Marshal(next)
			if err := redis.Do(ctx, redis.B().Set().Key(key).Value(string(b)).Build()).Error(); err != nil {
				return err
			}
			out = append(out, kafka.Message{Topic: "out-c", Key: []byte(next.URL), Value: c.Encode(next)})
		}
		return w.Publish(ctx, out, ms[len(ms)-1].Offset+1)
	})
	return time.Since(start), err
}
