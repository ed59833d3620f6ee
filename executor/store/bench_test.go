package store

import (
	"fmt"
	"strings"
	"testing"

	"github.com/docexec/docexec/executor/document"
)

// BenchmarkSave measures Save on PostgreSQL with 1000-state batches and a
// watermark, as the sync loop calls it: "insert" writes new urls, "update"
// merges newer versions into existing rows.
func BenchmarkSave(b *testing.B) {
	const batch = 1000
	text := strings.Repeat("lorem ipsum ", 16)
	states := func(round, urlBase int) []document.Document {
		out := make([]document.Document, batch)
		for i := range out {
			out[i] = document.StateOf(document.Document{
				URL:       fmt.Sprintf("https://bench.example/%d/%d", urlBase, i),
				PubDate:   uint64(1_700_000_000 + i),
				FetchTime: uint64(1_700_000_000 + round*batch + i),
				Text:      text,
			})
		}
		return out
	}
	run := func(b *testing.B, s *Store, next func(round int) []document.Document) {
		round := 0
		for b.Loop() {
			st := next(round)
			round++
			mark := &Watermark{Pool: "bench", Partition: 0, Offset: int64(round * batch), Epoch: 1}
			if err := s.Save(ctx, st, mark); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(round*batch)/b.Elapsed().Seconds(), "rows/s")
	}
	b.Run("insert", func(b *testing.B) {
		s := openPostgres(b, Options{BatchSize: batch})
		run(b, s, func(round int) []document.Document { return states(round, round) })
	})
	b.Run("update", func(b *testing.B) {
		s := openPostgres(b, Options{BatchSize: batch})
		save(b, s, states(0, 0), nil)
		run(b, s, func(round int) []document.Document { return states(round+1, 0) })
	})
}
