// Package docgen generates streams of web document updates that look like a
// crawler's, as the JSON lines docexec reads: texts of a few kilobytes with a
// tail up to the topic's message limit, in many scripts and full of the
// characters that break naive code, urls from 20 bytes to 8 KB, several
// versions per url, duplicated and out of order.
//
// Tests, benchmarks and `make sample-realistic` use it so that what they feed
// docexec resembles production, where 10 KB pages broke what 220-byte test
// documents never had. A stream depends on its Options alone: the same
// Options give the same bytes.
package docgen

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"math/rand/v2"

	"github.com/docexec/docexec/executor/document"
)

// Defaults of the Options' zero values.
const (
	DefaultURLs            = 1000
	DefaultMaxVersions     = 12
	DefaultDuplicateRate   = 0.2
	DefaultShuffleWindow   = FullShuffle
	DefaultMedianTextBytes = 6 << 10
	DefaultMaxMessageBytes = 1 << 20 // Kafka's default limit
)

// FullShuffle as Options.ShuffleWindow delivers updates in a uniformly random
// order.
const FullShuffle = math.MaxInt

// MinMaxMessageBytes is the smallest Options.MaxMessageBytes: room for the
// longest url twice (the key and the value) and some text.
const MinMaxMessageBytes = 32 << 10

// ErrBadOptions matches (with errors.Is) the errors of New.
var ErrBadOptions = errors.New("docgen: bad options")

// Options describe a stream. The zero value is a stream of DefaultURLs urls.
type Options struct {
	// Seed chooses the stream among all those of the other options.
	Seed uint64
	// URLs is the number of distinct urls. Zero: as many as TotalBytes
	// needs, or DefaultURLs if TotalBytes is zero too.
	URLs int
	// TotalBytes, if positive, ends the stream with the line that brings
	// the bytes written, newlines included, to TotalBytes.
	TotalBytes int64
	// MaxVersions bounds the versions of a url: each has 1 to MaxVersions
	// (uniformly), with increasing fetch times. Zero: DefaultMaxVersions.
	MaxVersions int
	// DuplicateRate is the share of updates delivered twice, byte for
	// byte, as a producer's retry does. At most 1; zero:
	// DefaultDuplicateRate; negative: no duplicates.
	DuplicateRate float64
	// ShuffleWindow says how far from crawl (fetch time) order updates
	// arrive: each delivery is drawn at random among the next
	// ShuffleWindow updates, so most arrive within that many places of
	// their turn and a few later. 1 keeps crawl order. Zero:
	// DefaultShuffleWindow, a full shuffle.
	ShuffleWindow int
	// MedianTextBytes is the median size of texts. Sizes are log-normal,
	// about one text in a thousand reaching 1 MiB at the default: such a
	// text is cut to fit MaxMessageBytes. None is under 256 bytes. Zero:
	// DefaultMedianTextBytes.
	MedianTextBytes int
	// MaxMessageBytes is the input topic's message limit. Every line fits in
	// it with its url as the key and Kafka's framing around them, and so
	// does the state docexec publishes for it (it adds firstFetchTime). At
	// least MinMaxMessageBytes; zero:
	// DefaultMaxMessageBytes.
	MaxMessageBytes int
	// BadLineRate is the share of lines that are broken copies of a good
	// one, each of a kind the codec refuses (see Line.Bad). Below 1; zero:
	// none.
	BadLineRate float64
}

// A Generator holds the plan of a stream: urls, versions and their delivery
// order. Texts are made as lines are delivered, so a large stream costs the
// memory of its plan only.
type Generator struct {
	opts Options // with defaults
	plan []planned
}

// New validates opts, fills in defaults and plans the stream.
func New(opts Options) (*Generator, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Generator{opts: o, plan: plan(o)}, nil
}

func (o Options) withDefaults() (Options, error) {
	for _, f := range []struct {
		name  string
		value int64
	}{
		{"URLs", int64(o.URLs)}, {"TotalBytes", o.TotalBytes}, {"MaxVersions", int64(o.MaxVersions)},
		{"ShuffleWindow", int64(o.ShuffleWindow)}, {"MedianTextBytes", int64(o.MedianTextBytes)},
		{"MaxMessageBytes", int64(o.MaxMessageBytes)},
	} {
		if f.value < 0 {
			return o, fmt.Errorf("%w: %s is negative (%d)", ErrBadOptions, f.name, f.value)
		}
	}
	if !(o.DuplicateRate <= 1) { // NaN too
		return o, fmt.Errorf("%w: DuplicateRate %v is above 1", ErrBadOptions, o.DuplicateRate)
	}
	if !(0 <= o.BadLineRate && o.BadLineRate < 1) {
		return o, fmt.Errorf("%w: BadLineRate %v is not in [0, 1)", ErrBadOptions, o.BadLineRate)
	}
	if o.URLs == 0 && o.TotalBytes == 0 {
		o.URLs = DefaultURLs
	}
	if o.MaxVersions == 0 {
		o.MaxVersions = DefaultMaxVersions
	}
	if o.DuplicateRate == 0 {
		o.DuplicateRate = DefaultDuplicateRate
	}
	if o.ShuffleWindow == 0 {
		o.ShuffleWindow = DefaultShuffleWindow
	}
	if o.MedianTextBytes == 0 {
		o.MedianTextBytes = DefaultMedianTextBytes
	}
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.MaxMessageBytes < MinMaxMessageBytes {
		return o, fmt.Errorf("%w: MaxMessageBytes %d is below %d", ErrBadOptions, o.MaxMessageBytes, MinMaxMessageBytes)
	}
	return o, nil
}

// A Line is one line of the stream.
type Line struct {
	// JSON is the line without its newline: one JSON object with keys url,
	// pubDate, fetchTime and text.
	JSON []byte
	// Update is what JSON decodes to; zero for a bad line.
	Update document.Document
	// Bad is empty for a good line, else what is wrong with it: the
	// message is cut short (not JSON), it has no url, its fetchTime is
	// negative or above the uint64 range, or its text holds a NUL.
	Bad string
}

// Lines yields the lines of the stream in delivery order, the same ones on
// every call.
func (g *Generator) Lines() iter.Seq[Line] {
	return func(yield func(Line) bool) {
		r := rand.New(rand.NewPCG(g.opts.Seed, badLineStream))
		var written int64
		emit := func(l Line) bool {
			written += int64(len(l.JSON)) + 1
			return yield(l) && (g.opts.TotalBytes == 0 || written < g.opts.TotalBytes)
		}
		badCount := 0
		for i := range g.plan {
			l := g.line(&g.plan[i])
			if g.opts.BadLineRate > 0 && r.Float64() < g.opts.BadLineRate {
				// Every kind in turn, so that a few bad lines show them
				// all; a short text, so that they fit wherever they go.
				bad := badLines[badCount%len(badLines)]
				badCount++
				d := l.Update
				d.Text = d.Text[:runeStart(d.Text, 200)]
				if !emit(Line{JSON: bad.line(nil, d), Bad: bad.reason}) {
					return
				}
			}
			if !emit(l) {
				return
			}
		}
	}
}

// Updates yields the documents of the good lines in delivery order.
func (g *Generator) Updates() iter.Seq[document.Document] {
	return func(yield func(document.Document) bool) {
		for l := range g.Lines() {
			if l.Bad == "" && !yield(l.Update) {
				return
			}
		}
	}
}

// Stats count what WriteJSONL wrote.
type Stats struct {
	Lines    int   // bad ones included
	BadLines int   // lines with Line.Bad set
	Bytes    int64 // newlines included
}

// WriteJSONL writes the stream to w, one line per JSON object.
func (g *Generator) WriteJSONL(w io.Writer) (Stats, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	var st Stats
	for l := range g.Lines() {
		bw.Write(l.JSON)
		if err := bw.WriteByte('\n'); err != nil { // a failed Write fails every later call
			return st, fmt.Errorf("docgen: write: %w", err)
		}
		st.Lines++
		st.Bytes += int64(len(l.JSON)) + 1
		if l.Bad != "" {
			st.BadLines++
		}
	}
	if err := bw.Flush(); err != nil {
		return st, fmt.Errorf("docgen: write: %w", err)
	}
	return st, nil
}

// FinalStates returns the state of every url after all of updates, as
// docexec must end up with it whatever their order: an oracle for tests.
func FinalStates(updates iter.Seq[document.Document]) map[string]document.Document {
	states := map[string]document.Document{}
	for u := range updates {
		state, found := states[u.URL]
		states[u.URL], _ = document.Apply(state, found, u)
	}
	return states
}
