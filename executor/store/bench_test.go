package store

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/internal/docgen"
)

// benchBatch is the states of one Save in BenchmarkSave and
// BenchmarkSaveTwoAtOnce, as many as the sync's pages hold by default.
const benchBatch = 1000

// benchStates is the round-th version of benchBatch states of urls in a
// set named by urlBase.
func benchStates(round, urlBase int) []document.Document {
	text := strings.Repeat("lorem ipsum ", 16)
	out := make([]document.Document, benchBatch)
	for i := range out {
		out[i] = document.StateOf(document.Document{
			URL:       fmt.Sprintf("https://bench.example/%d/%d", urlBase, i),
			PubDate:   uint64(1_700_000_000 + i),
			FetchTime: uint64(1_700_000_000 + round*benchBatch + i),
			Text:      text,
		})
	}
	return out
}

// BenchmarkSave measures Save on PostgreSQL with 1000-state batches and a
// watermark, as the sync loop calls it: "insert" writes new urls, "update"
// merges newer versions into existing rows.
func BenchmarkSave(b *testing.B) {
	const batch = benchBatch
	states := benchStates
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

// BenchmarkSaveTwoAtOnce measures Saves of new urls two at a time, as a
// sync pass has them in flight: the rows per second to compare with
// BenchmarkSave/insert.
func BenchmarkSaveTwoAtOnce(b *testing.B) {
	s := openPostgres(b, Options{BatchSize: benchBatch})
	round := 0
	for b.Loop() {
		var wg sync.WaitGroup
		for half := range 2 {
			states := benchStates(round, 2*round+half)
			wg.Go(func() {
				if err := s.Save(ctx, states, nil); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		round++
	}
	b.ReportMetric(float64(2*round*benchBatch)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkSaveWebPages measures Save of web pages (docgen: texts
// log-normal around 6 KB with a tail to the broker's limit, every script)
// with each TOAST compression PostgreSQL offers for the texts' column:
// pglz, its default, and lz4, which Migrate sets where it can.
func BenchmarkSaveWebPages(b *testing.B) {
	g, err := docgen.New(docgen.Options{Seed: 3, TotalBytes: 20 << 20})
	if err != nil {
		b.Fatal(err)
	}
	var pages []document.Document
	textBytes := 0
	for d := range g.Updates() {
		pages = append(pages, document.StateOf(d))
		textBytes += len(d.Text)
	}
	for _, compression := range []string{"pglz", "lz4"} {
		b.Run(compression, func(b *testing.B) {
			s := openPostgres(b, Options{})
			if err := s.db.Exec(`ALTER TABLE "documents" ALTER COLUMN "text" SET COMPRESSION ` + compression).Error; err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := s.db.Exec(`TRUNCATE "documents"`).Error; err != nil {
					b.Fatal(err)
				}
				for i := 0; i < len(pages); i += 100 {
					if err := s.Save(ctx, pages[i:min(i+100, len(pages))], nil); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N)*float64(textBytes)/1e6/b.Elapsed().Seconds(), "MB/s")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(pages)), "µs/page")
		})
	}
}
