// Package partition runs one partition of a pool from the executor's
// configuration: it maps the configuration to the partition's pipeline,
// codec, state in Redis and store, and leads the pipeline under an
// election. `docexec executor` (one partition, elected by a Lease) and
// `docexec local` (every partition in one process) both run a partition
// this way, so that they run the same settings.
package partition

import (
	"context"
	"log/slog"
	"time"

	"github.com/redis/rueidis"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/config"
	"github.com/docexec/docexec/executor/fencing"
	"github.com/docexec/docexec/executor/health"
	"github.com/docexec/docexec/executor/leader"
	"github.com/docexec/docexec/executor/pipeline"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/executor/store"
)

// Lead runs the partition: at once without an elector, else in terms of
// leadership, standing by in between. A term that ends — fenced by a newer
// leader, its Lease lost, or failed (a server away, a producer sarama gave
// up on) — is followed by another after a pause that grows while terms
// keep failing; only ctx (SIGTERM) ends Lead, after the current term's
// graceful stop.
func Lead(ctx context.Context, engine *pipeline.Engine, elector leader.Elector, pause time.Duration, log *slog.Logger, h *health.Health) error {
	backoff := health.Backoff{Min: pause, Max: 30 * time.Second}
	for {
		led, err := true, error(nil)
		if elector == nil {
			err = engine.Run(ctx)
		} else {
			led, err = elector.Lead(ctx, engine.Run)
		}
		if ctx.Err() != nil {
			return nil
		}
		switch action := fencing.Classify(err); {
		case err == nil:
			if led {
				backoff.Reset()
				log.Info("Stepped down; standing by")
			}
		case action == fencing.Recover:
			// Recovered by a new term, at once: if the Lease still says so.
			backoff.Reset()
			log.Warn("Lost the partition's state in Redis, or Redis went back in time; a new term recovers it from PostgreSQL and Kafka", "err", err)
		case action == fencing.StandBy:
			if elector == nil {
				log.Error("Fenced: another executor claimed the partition, and without leader.lease nothing elects between them; retrying", "err", err)
			} else {
				backoff.Reset()
				log.Warn("Fenced by a newer leader; standing by", "err", err)
			}
		case action == fencing.StepDown:
			backoff.Reset()
			log.Warn("The term ended badly after its Lease was lost; standing by", "err", err)
		default:
			// Logged once until a term processes again (which clears it).
			h.Set(pipeline.HealthTerm, err)
		}
		wait := backoff.Next()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// RedisOptions are the options of the Redis client of an executor.
func RedisOptions(cfg config.Redis) rueidis.ClientOption {
	return rueidis.ClientOption{
		InitAddress: cfg.Addresses, Username: cfg.Username, Password: cfg.Password,
		DisableCache: true, // the executor is the only writer of its keys
		// rueidis would retry reads while Redis is away, for as long as it
		// takes and silently; the executor's own retries say so.
		DisableRetry: true,
	}
}

// StoreOptions are the options of an executor's store.
func StoreOptions(cfg config.Config) store.Options {
	return store.Options{Table: cfg.Postgres.Table, BatchSize: cfg.Sync.BatchSize}
}

// NewEngine builds the partition's pipeline engine from the configuration, the
// one place that maps it to the pipeline's options, codec and state in
// Redis: `docexec executor` and `docexec local` run the same settings.
// deps bring the rest (their Codec, State and KafkaConfig are set here).
func NewEngine(cfg config.Config, redis rueidis.Client, deps pipeline.Deps) (*pipeline.Engine, error) {
	c, err := codec.New(cfg.Kafka.Format)
	if err != nil {
		return nil, err
	}
	deps.Codec = c
	deps.KafkaConfig = cfg.Kafka.Config
	deps.State = state.New(redis, state.Options{Pool: cfg.Identity(), Partition: cfg.Partition, CleanTTL: time.Duration(cfg.Redis.CleanTTL),
		PartitionCount: deps.Kafka.PartitionCount(cfg.Kafka.InputTopic)})
	return pipeline.New(PipelineOptions(cfg), deps), nil
}

// PipelineOptions are the options of the partition's pipeline.
func PipelineOptions(cfg config.Config) pipeline.Options {
	return pipeline.Options{
		Pool: cfg.Identity(), Partition: cfg.Partition,
		InputTopic: cfg.Kafka.InputTopic, OutputTopic: cfg.Kafka.OutputTopic, DeadLetterTopic: cfg.Kafka.DeadLetterTopic,
		Group: cfg.Kafka.Group, StartOffset: cfg.Kafka.StartOffset,
		BatchSize: cfg.Batch.Size, BatchBytes: cfg.Batch.MaxBytes, BatchWait: time.Duration(cfg.Batch.MaxWait),
		SyncInterval: time.Duration(cfg.Sync.Interval), SyncBatch: cfg.Sync.BatchSize,
		ShutdownTimeout: time.Duration(cfg.ShutdownTimeout),
	}
}
