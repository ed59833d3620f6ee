package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/IBM/sarama"
)

// Header is a record header.
type Header struct {
	Key, Value []byte
}

// Record is a message read from Kafka. Its byte slices are the client's
// own, never copied: a caller may keep them.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	// Timestamp is the record's Kafka timestamp.
	Timestamp time.Time
	Key       []byte
	Value     []byte
	Headers   []Header
}

// ReadOptions say which partition a Reader reads, from where, and how it
// cuts what it reads into batches.
type ReadOptions struct {
	Topic     string
	Partition int32
	// Offset is the first offset read.
	Offset int64
	// MaxRecords bounds the records of a batch (required). MaxBytes, when
	// set, closes a batch at the record that brings its values to that many
	// bytes: a batch holds at most MaxBytes plus one record.
	MaxRecords int
	MaxBytes   int
	// MaxWait is how long a batch waits for more records after its first;
	// 0 takes only those already read ahead.
	MaxWait time.Duration
	// Failing hears of each error the reader meets (it reads on after
	// them), and of nil at the first record after one; nil: a warning per
	// error in slog's default.
	Failing func(error)
}

func (o ReadOptions) validate() error {
	switch {
	case o.Topic == "":
		return errors.New("a topic is required")
	case o.MaxRecords <= 0:
		return fmt.Errorf("MaxRecords is %d: a batch needs room for a record", o.MaxRecords)
	case o.MaxBytes < 0:
		return fmt.Errorf("MaxBytes is %d: 0 (no bound) or more", o.MaxBytes)
	case o.MaxWait < 0:
		return fmt.Errorf("MaxWait is %v: 0 (no wait) or more", o.MaxWait)
	}
	return nil
}

// Reader reads one partition in batches.
type Reader struct {
	opts   ReadOptions
	pc     sarama.PartitionConsumer
	errors <-chan *sarama.ConsumerError // nil once closed
	// batch is what Poll returns, reused: converting a message allocates
	// nothing.
	batch  []Record
	wait   *time.Timer // of the batch in hand, from its first record
	failed bool        // an error was reported, no record since
}

// Read starts reading a partition at an offset.
func (c *Client) Read(opts ReadOptions) (*Reader, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("%w: read %s/%d: %w", ErrInvalidConfig, opts.Topic, opts.Partition, err)
	}
	if opts.Failing == nil {
		opts.Failing = func(err error) {
			if err != nil {
				slog.Warn("Kafka read failed; the reader retries", "topic", opts.Topic, "partition", opts.Partition, "err", err)
			}
		}
	}
	pc, err := c.consumer.ConsumePartition(opts.Topic, opts.Partition, opts.Offset)
	if err != nil {
		return nil, fmt.Errorf("kafka: read %s/%d from offset %d: %w", opts.Topic, opts.Partition, opts.Offset, err)
	}
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	return &Reader{opts: opts, pc: pc, errors: pc.Errors(), batch: make([]Record, 0, opts.MaxRecords), wait: wait}, nil
}

// Poll returns the next batch of records in offset order: it waits for the
// first as long as ctx lets, then takes more until the batch is full or its
// wait is over. When ctx ends it returns the records in hand (maybe none)
// with ctx's error; when the reader stopped for good, an error.
//
// The returned slice is reused by the next Poll; the records copied out of
// it stay valid.
func (r *Reader) Poll(ctx context.Context) ([]Record, error) {
	batch := r.batch[:0]
	var headers []Header // of the batch's records: one allocation for all
	size := 0            // of the batch's values
	defer r.wait.Stop()
	for {
		m, err := r.next(ctx, len(batch) == 0)
		if err != nil {
			return batch, err
		}
		if m == nil { // the batch's wait is over
			return batch, nil
		}
		if len(batch) == 0 && r.opts.MaxWait > 0 {
			r.wait.Reset(r.opts.MaxWait)
		}
		batch = append(batch, Record{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Timestamp: m.Timestamp, Key: m.Key, Value: m.Value})
		if len(m.Headers) > 0 {
			start := len(headers)
			for _, h := range m.Headers {
				headers = append(headers, Header{Key: h.Key, Value: h.Value})
			}
			batch[len(batch)-1].Headers = headers[start:len(headers):len(headers)]
		}
		size += len(m.Value)
		if len(batch) == r.opts.MaxRecords || (r.opts.MaxBytes > 0 && size >= r.opts.MaxBytes) {
			return batch, nil
		}
	}
}

// next returns the next message read ahead: for the batch's first, waiting
// until ctx ends; for a later one, until the batch's wait is over (then
// nil).
func (r *Reader) next(ctx context.Context, first bool) (*sarama.ConsumerMessage, error) {
	if !first && r.opts.MaxWait == 0 {
		select {
		case m, ok := <-r.pc.Messages():
			return r.received(m, ok)
		default:
			return nil, nil
		}
	}
	var over <-chan time.Time
	if !first {
		over = r.wait.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("kafka: read %s/%d: %w", r.opts.Topic, r.opts.Partition, ctx.Err())
		case <-over:
			return nil, nil
		case cerr, ok := <-r.errors:
			if !ok {
				r.errors = nil
				continue
			}
			r.failed = true
			r.opts.Failing(cerr.Err)
		case m, ok := <-r.pc.Messages():
			return r.received(m, ok)
		}
	}
}

func (r *Reader) received(m *sarama.ConsumerMessage, ok bool) (*sarama.ConsumerMessage, error) {
	if !ok {
		return nil, fmt.Errorf("kafka: the reader of %s/%d stopped", r.opts.Topic, r.opts.Partition)
	}
	if r.failed {
		r.failed = false
		r.opts.Failing(nil)
	}
	return m, nil
}

// HighWaterMark returns the offset of the partition's next message, as of
// the last fetch.
func (r *Reader) HighWaterMark() int64 { return r.pc.HighWaterMarkOffset() }

// Close stops reading.
func (r *Reader) Close() error { return r.pc.Close() }
