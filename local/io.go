package local

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docexec/docexec/executor/pipeline"
)

// open returns the input named by path ("-" is stdin).
func open(path string, stdin io.Reader) (io.Reader, func(), error) {
	if path == "-" {
		return stdin, func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open input: %w", err)
	}
	return f, func() { f.Close() }, nil
}

// create returns a buffered writer of the output named by path ("-" is
// stdout, "" is none: a nil writer), and the function that flushes and
// closes it.
func create(path string, stdout io.Writer) (*bufio.Writer, func() error, error) {
	switch path {
	case "":
		return nil, func() error { return nil }, nil
	case "-":
		w := bufio.NewWriterSize(stdout, 64<<10)
		return w, w.Flush, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, fmt.Errorf("create output: %w", err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	return w, func() error { return errors.Join(w.Flush(), f.Close()) }, nil
}

// counting reads through r and counts the bytes and lines read (bufio
// reads ahead of the lines handed on: close enough for a progress bar);
// size is r's in all when known.
type counting struct {
	r                  io.Reader
	bytes, lines, size atomic.Int64
}

func (c *counting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.bytes.Add(int64(n))
	c.lines.Add(int64(bytes.Count(p[:n], []byte{'\n'})))
	return n, err
}

// status is what the progress line shows after processed of the input.
func (c *counting) status(processed pipeline.Counts) status {
	return status{read: c.bytes.Load(), total: c.size.Load(), lines: c.lines.Load(),
		processed: processed.In, emitted: processed.Emitted, deadLettered: processed.DeadLettered}
}

// status is what the progress line shows.
type status struct {
	read, total                      int64 // input bytes read, and in all (0: unknown, stdin)
	lines                            int64 // input lines read
	processed, emitted, deadLettered int64
}

// render draws s after elapsed: when the input's size is known, a bar of
// the share processed, the input read, the rate and the time left (the
// lines still to read are supposed the size of those read); the counts.
func render(s status, elapsed time.Duration) string {
	var b strings.Builder
	rate := 0.0
	if secs := elapsed.Seconds(); secs > 0 {
		rate = float64(s.processed) / secs
	}
	if s.total > 0 {
		docs := 0.0 // the input's lines in all, estimated
		if s.read > 0 {
			docs = float64(s.lines) * float64(s.total) / float64(s.read)
		}
		share := 0.0
		if docs > 0 {
			share = min(1, float64(s.processed)/docs)
		}
		const width = 24
		done := int(share * width)
		b.WriteString("[" + strings.Repeat("=", done))
		if done < width {
			b.WriteString(">" + strings.Repeat(" ", width-done-1))
		}
		fmt.Fprintf(&b, "] %3.0f%%  %.1f/%.1f MB read  %.0f docs/s", 100*share, float64(s.read)/1e6, float64(s.total)/1e6, rate)
		eta := "ETA -"
		if docs > 0 && rate > 0 {
			left := time.Duration(max(0, docs-float64(s.processed)) / rate * float64(time.Second))
			eta = "ETA " + left.Round(time.Second).String()
		}
		b.WriteString("  " + eta)
	} else {
		fmt.Fprintf(&b, "%.1f MB read  %.0f docs/s", float64(s.read)/1e6, rate)
	}
	fmt.Fprintf(&b, "  |  processed %d, emitted %d, dead-lettered %d", s.processed, s.emitted, s.deadLettered)
	return b.String()
}

// progress redraws one status line on a terminal; elsewhere it is silent.
type progress struct {
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func newProgress(w io.Writer, now func() status) *progress {
	p := &progress{done: make(chan struct{})}
	f, ok := w.(*os.File)
	if !ok {
		return p
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return p
	}
	started := time.Now()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				fmt.Fprint(f, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprintf(f, "\r\033[K%s", render(now(), time.Since(started)))
			}
		}
	}()
	return p
}

// stop clears the line and waits for the redrawing goroutine.
func (p *progress) stop() {
	p.once.Do(func() { close(p.done) })
	p.wg.Wait()
}
