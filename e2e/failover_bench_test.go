package e2e

import (
	"context"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docexec/docexec/executor/kafka"
)

// BenchmarkFailover measures the failover gap: the longest time without a
// committed batch around a handover, while input keeps arriving. Run it
// with a few iterations:
//
//	make bench-failover
func BenchmarkFailover(b *testing.B) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		b.Run(sig.String(), func(b *testing.B) { benchFailover(b, sig) })
	}
}

func benchFailover(b *testing.B, sig syscall.Signal) {
	f := newFleet(b, servers{})
	client, err := kafka.Connect(kafka.Config{Brokers: f.brokers})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	f.start()
	f.start()
	leader := f.leader("")

	// A steady stream, and a record of when the committed offset moved.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var moves []time.Time
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if err := f.tryProduce(50); err != nil {
				b.Error(err) // Error, unlike Fatal, may be called from any goroutine
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		last := int64(-1)
		for ctx.Err() == nil {
			if off, _, err := client.Committed("docexec-"+f.pool, "in", 0); err == nil && off != last {
				last = off
				mu.Lock()
				moves = append(moves, time.Now())
				mu.Unlock()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	defer func() { stop(); wg.Wait() }()

	var gaps []time.Duration
	b.ResetTimer()
	for range b.N {
		time.Sleep(time.Second)
		at := time.Now()
		f.signal(leader, sig)
		next := f.leader(leader)
		f.start() // the replaced pod
		time.Sleep(time.Second)
		mu.Lock()
		gaps = append(gaps, longestPause(moves, at.Add(-500*time.Millisecond), time.Now()))
		mu.Unlock()
		leader = next
	}
	b.StopTimer()
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	var sum time.Duration
	for _, g := range gaps {
		sum += g
	}
	b.ReportMetric(float64(sum.Milliseconds())/float64(len(gaps)), "mean-gap-ms")
	b.ReportMetric(float64(gaps[len(gaps)-1].Milliseconds()), "max-gap-ms")
}

// longestPause returns the longest time between two commits in [from, to].
func longestPause(moves []time.Time, from, to time.Time) time.Duration {
	var longest time.Duration
	prev := from
	for _, m := range moves {
		if m.Before(from) || m.After(to) {
			continue
		}
		longest = max(longest, m.Sub(prev))
		prev = m
	}
	return max(longest, to.Sub(prev))
}
