package local

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
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

// progress redraws one status line on a terminal; elsewhere it is silent.
type progress struct {
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func newProgress(w io.Writer, status func() string) *progress {
	p := &progress{done: make(chan struct{})}
	f, ok := w.(*os.File)
	if !ok {
		return p
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return p
	}
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
				fmt.Fprintf(f, "\r\033[K%s", status())
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
