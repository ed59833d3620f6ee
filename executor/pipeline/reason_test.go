package pipeline

import (
	"fmt"
	"testing"

	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/metrics"
)

// TestRecordedDeadLettersAreCountedByTheirReason checks the class of the
// dead letters a new leader publishes again from a recorded output, which
// keeps only their headers' reasons: also when a tight dead-letter topic
// made fitDeadLetter cut the message out of them.
func TestRecordedDeadLettersAreCountedByTheirReason(t *testing.T) {
	deadLetter := func(why string, budget int) kafka.Message {
		return fitDeadLetter(kafka.Message{Topic: "dlq", Key: []byte("https://a.example/"), Value: make([]byte, 4000),
			Headers: []kafka.Header{{Key: []byte(HeaderReason), Value: []byte(why)}}}, budget)
	}
	tooLarge := fmt.Sprintf(tooLargeReason+": %d bytes, more than the %d that topics of max.message.bytes %d take", 2000000, 1000000, 1048576)
	for _, c := range []struct {
		why    string
		budget int
		want   metrics.DeadLetterReason
	}{
		{tooLarge, 1 << 20, metrics.TooLarge},
		{tooLarge, 300, metrics.TooLarge},
		{"not JSON: unexpected end of input", 1 << 20, metrics.BadInput},
		{"not JSON: unexpected end of input", 300, metrics.BadInput},
	} {
		if got := deadLetterReason(deadLetter(c.why, c.budget)); got != c.want {
			t.Errorf("%q within %d bytes: counted as %s, want %s", c.why, c.budget, got, c.want)
		}
	}
}
