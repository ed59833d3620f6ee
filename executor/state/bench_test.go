package state_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/state"
	"github.com/docexec/docexec/internal/testenv"
)

// BenchmarkApply merges batches of 500 updates of 20,000 urls, half of
// them changes, into a real redis-server.
func BenchmarkApply(b *testing.B) {
	s, epoch, _ := fresh(b, testenv.Redis(b), true)
	text := strings.Repeat("lorem ipsum ", 12)
	batch := make([]state.Update, 500)
	b.ResetTimer()
	for i := range b.N {
		for j := range batch {
			n := i*len(batch) + j
			batch[j] = state.Update{Emit: state.EmitChanged, Doc: document.Document{
				URL: fmt.Sprintf("https://site%d.example/articles/%d", n%50, n%20000), FetchTime: uint64(n % 40000), Text: text}}
		}
		if _, err := s.Apply(context.Background(), epoch, batch, int64(i+1), nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "docs/s")
}
