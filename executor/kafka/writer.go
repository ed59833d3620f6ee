package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/IBM/sarama"

	"github.com/docexec/docexec/executor/fencing"
)

var (
	// ErrPermanent marks a batch that no retry can publish (a record larger
	// than the topic accepts): the term must end rather than loop; the next
	// one reads the topics' limits again.
	ErrPermanent = errors.New("kafka: the batch cannot be published")
	// ErrProducerFailed means the transactional producer is in a state no
	// abort clears (sarama calls it fatal): the term must end. Only a new
	// claim opens another producer, since opening one fences the
	// partition's current leader, whoever that is by then.
	ErrProducerFailed = errors.New("kafka: the transactional producer failed")
)

// WriterOptions says which partition's transactions a Writer makes.
type WriterOptions struct {
	// TransactionalID identifies the partition's producer across executors
	// (TransactionalID(pool, topic, partition)); opening a Writer with it
	// fences every earlier one.
	TransactionalID string
	// Group is the consumer group whose offsets the transactions commit.
	Group string
	// InputTopic and Partition are what the committed offsets refer to.
	InputTopic string
	Partition  int32
	// MaxMessageBytes is the largest record batch the output and
	// dead-letter topics accept (Client.MaxMessageBytes); no batch is
	// larger and records above Budget are refused.
	MaxMessageBytes int
	// Failing hears of each failed try that is retried, and of each
	// success (a nil error); nil: a warning per failed try in slog's
	// default.
	Failing func(error)
}

func (o WriterOptions) validate() error {
	switch {
	case o.TransactionalID == "":
		return errors.New("a transactional id is required: it fences the partition's older writers")
	case o.Group == "":
		return errors.New("a consumer group is required: the transactions commit its offsets")
	case o.InputTopic == "":
		return errors.New("an input topic is required: the committed offsets are of its partition")
	}
	return nil
}

// TransactionalID returns the transactional id of a pool's partition.
func TransactionalID(pool, inputTopic string, partition int32) string {
	return fmt.Sprintf("docexec-%s-%s-%d", pool, inputTopic, partition)
}

// Writer publishes batches transactionally.
type Writer struct {
	cfg      Config
	opts     WriterOptions
	client   sarama.Client
	producer sarama.SyncProducer
}

// NewWriter opens the partition's transactional producer, fencing any
// earlier producer of the same transactional id (the broker aborts its open
// transaction).
func NewWriter(cfg Config, opts WriterOptions) (*Writer, error) {
	if opts.Failing == nil {
		opts.Failing = func(err error) {
			if err != nil {
				slog.Warn("Kafka transaction failed; retrying", "transactionalID", opts.TransactionalID, "err", err)
			}
		}
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("%w: writer %s: %w", ErrInvalidConfig, opts.TransactionalID, err)
	}
	w := &Writer{cfg: cfg, opts: opts}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open() error {
	sc, err := w.cfg.idempotentProducer(sarama.NewManualPartitioner, w.opts.MaxMessageBytes)
	if err != nil {
		return err
	}
	sc.Producer.Transaction.ID = w.opts.TransactionalID
	sc.Producer.Transaction.Retry.Backoff = 50 * time.Millisecond
	client, err := w.cfg.connect(sc)
	if err != nil {
		return fmt.Errorf("kafka: producer %s: %w", w.opts.TransactionalID, err)
	}
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		client.Close()
		return fmt.Errorf("kafka: open transactional producer %s: %w", w.opts.TransactionalID, classify(err))
	}
	w.client, w.producer = client, producer
	return nil
}

// Budget is the largest record Publish sends, as RecordBytes counts: the
// caller replaces larger ones (a batch holding one cannot be published).
func (w *Writer) Budget() int { return RecordBudget(w.opts.MaxMessageBytes, w.cfg.compression()) }

// Close closes the producer.
func (w *Writer) Close() error {
	return errors.Join(w.producer.Close(), w.client.Close())
}

// Message is one record to publish.
type Message struct {
	Topic     string
	Partition int32
	Key       []byte
	Value     []byte
	Headers   []Header
}

// producerMessages returns msgs as sarama sends them: their byte slices
// are shared, not copied, and the records and headers of the whole batch
// take one allocation each.
func producerMessages(msgs []Message) []*sarama.ProducerMessage {
	headers := 0
	for _, m := range msgs {
		headers += len(m.Headers)
	}
	values := make([]sarama.ProducerMessage, len(msgs))
	records := make([]*sarama.ProducerMessage, len(msgs))
	hs := make([]sarama.RecordHeader, 0, headers)
	for i, m := range msgs {
		hs = toSarama(m, &values[i], hs)
		records[i] = &values[i]
	}
	return records
}

// toSarama fills pm with m, appending m's headers to hs for pm to share;
// it returns hs.
func toSarama(m Message, pm *sarama.ProducerMessage, hs []sarama.RecordHeader) []sarama.RecordHeader {
	pm.Topic, pm.Partition, pm.Value = m.Topic, m.Partition, sarama.ByteEncoder(m.Value)
	// A nil key stays nil: a hashing partitioner spreads keyless records.
	if m.Key != nil {
		pm.Key = sarama.ByteEncoder(m.Key)
	}
	if len(m.Headers) > 0 {
		start := len(hs)
		for _, h := range m.Headers {
			hs = append(hs, sarama.RecordHeader(h))
		}
		pm.Headers = hs[start:len(hs):len(hs)]
	}
	return hs
}

// Publish sends msgs and commits the group's offset next for the input
// partition, all or nothing. A failure that may pass is retried (the same
// records, a new transaction) until ctx ends; a fenced producer returns
// fencing.ErrFenced, a batch that cannot be published ErrPermanent.
func (w *Writer) Publish(ctx context.Context, msgs []Message, next int64) error {
	backoff := 100 * time.Millisecond
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("kafka: publish batch ending at offset %d: %w", next, err)
		}
		err := w.publishOnce(msgs, next)
		if err == nil {
			w.opts.Failing(nil)
			return nil
		}
		if errors.Is(err, fencing.ErrFenced) || errors.Is(err, ErrPermanent) {
			return err
		}
		if err := w.abort(err); err != nil {
			return err
		}
		w.opts.Failing(err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: publish gave up: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// abort ends the failed transaction, after which another may begin. It
// never reopens the producer: a newer leader may have opened the
// partition's producer since, and reopening would fence it. A fenced abort
// returns fencing.ErrFenced, a producer sarama gave up on
// ErrProducerFailed; an abort that fails otherwise is tried again at the
// next attempt.
func (w *Writer) abort(failed error) error {
	status := w.producer.TxnStatus()
	if status&(sarama.ProducerTxnFlagInTransaction|sarama.ProducerTxnFlagAbortableError) != 0 && status&sarama.ProducerTxnFlagFatalError == 0 {
		if err := w.producer.AbortTxn(); err != nil {
			if err := classify(err); errors.Is(err, fencing.ErrFenced) {
				return fmt.Errorf("kafka: abort after %w", err)
			}
		}
	}
	if w.producer.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 {
		return fmt.Errorf("%w: %w", ErrProducerFailed, failed)
	}
	return nil
}

func (w *Writer) publishOnce(msgs []Message, next int64) error {
	if err := w.producer.BeginTxn(); err != nil {
		return fmt.Errorf("kafka: begin transaction: %w", classify(err))
	}
	// Fresh records each try: sarama keeps per-send state in them.
	records := producerMessages(msgs)
	if len(records) > 0 {
		if err := w.producer.SendMessages(records); err != nil {
			return fmt.Errorf("kafka: send %d messages: %w", len(records), classify(err))
		}
	}
	offsets := map[string][]*sarama.PartitionOffsetMetadata{w.opts.InputTopic: {{Partition: w.opts.Partition, Offset: next, LeaderEpoch: -1}}}
	if err := w.producer.AddOffsetsToTxn(offsets, w.opts.Group); err != nil {
		return fmt.Errorf("kafka: add offset %d to transaction: %w", next, classify(err))
	}
	if err := w.producer.CommitTxn(); err != nil {
		return fmt.Errorf("kafka: commit transaction: %w", classify(err))
	}
	return nil
}

// classify marks the errors that mean a newer producer with the same
// transactional id took over (a newer executor owns the partition), and
// those no retry can fix.
func classify(err error) error {
	for _, fenced := range []error{sarama.ErrProducerFenced, sarama.ErrInvalidProducerEpoch} {
		if errors.Is(err, fenced) {
			return fmt.Errorf("kafka: %w: %w", fencing.ErrFenced, err)
		}
	}
	for _, permanent := range []error{sarama.ErrMessageSizeTooLarge, sarama.ErrInvalidMessage} {
		if errors.Is(err, permanent) {
			return fmt.Errorf("%w: %w", ErrPermanent, err)
		}
	}
	// sarama refuses a record above Producer.MaxMessageBytes itself, with
	// a configuration error: no retry sends it.
	var cerr sarama.ConfigurationError
	if errors.As(err, &cerr) {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	var perrs sarama.ProducerErrors
	if errors.As(err, &perrs) && len(perrs) > 0 {
		return fmt.Errorf("%d failed, first: %w", len(perrs), classify(perrs[0].Err))
	}
	return err
}
