// Package health keeps track of what stops an executor from doing its job
// — a server it cannot reach, a term that failed — for /readyz and for the
// logs: one line when a problem starts and one when it ends, however many
// retries lie between.
package health

import (
	"log/slog"
	"sort"
	"sync"
	"time"
)

// Health is the set of current problems, by component ("redis",
// "publish", "sync", ...). The zero value is not usable; nil is, and
// records nothing.
type Health struct {
	log      *slog.Logger
	mu       sync.Mutex
	problems map[string]problem
}

type problem struct {
	err   error
	since time.Time
}

// New returns an empty Health that logs changes to log.
func New(log *slog.Logger) *Health {
	return &Health{log: log, problems: map[string]problem{}}
}

// Set records component's state: err is its problem, nil that it works.
// Only changes are logged: a component starting to fail (with the error)
// and recovering (with how long it failed).
func (h *Health) Set(component string, err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	p, failing := h.problems[component]
	switch {
	case err != nil && !failing:
		h.problems[component] = problem{err: err, since: time.Now()}
		h.log.Warn("A dependency is failing; retrying until it recovers", "component", component, "err", err)
	case err != nil:
		h.problems[component] = problem{err: err, since: p.since} // the latest error, for /readyz
	case failing:
		delete(h.problems, component)
		h.log.Info("A dependency recovered", "component", component, "after", time.Since(p.since).Round(time.Millisecond))
	}
}

// Problems returns the current problems as "component: error", sorted.
func (h *Health) Problems() []string {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.problems))
	for c, p := range h.problems {
		out = append(out, c+": "+p.err.Error())
	}
	sort.Strings(out)
	return out
}

// Backoff is a capped exponential backoff.
type Backoff struct {
	// Min is the first wait, Max the longest.
	Min, Max time.Duration
	next     time.Duration
}

// Next returns the wait before the next attempt and doubles the one after.
func (b *Backoff) Next() time.Duration {
	if b.next < b.Min {
		b.next = b.Min
	}
	d := b.next
	b.next = min(2*b.next, b.Max)
	return d
}

// Reset starts again from Min, after a success.
func (b *Backoff) Reset() { b.next = 0 }
