package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/docexec/docexec/executor/config"
	"github.com/docexec/docexec/executor/kafka"
)

// executorResult is what a run of executors measured. Rates and CPU per
// document are taken between 10% and 90% of the workload committed, so
// that starting processes (connecting, claiming) and the last batches do
// not count; process CPU, peak RSS and Redis commands are whole runs.
type executorResult struct {
	docsPerSec float64
	machineUS  float64 // all processes of the machine
	redisUS    float64 // redis-server(s)
	processUS  float64 // the executors' own processes
	busy       float64 // share of the machine's cores in use
	redisBusy  float64 // share of one core that Redis used
	rss        int64   // the largest peak RSS of one executor
	anon       int64   // the largest peak anonymous RSS of one executor
	lag        time.Duration
	commands   string
	timings    string // of a one-partition run
}

// runExecutors runs one `docexec executor` per partition of w as pool
// until all of w is committed.
func runExecutors(ctx context.Context, s servers, r redisServers, cfg kafka.Config, client *kafka.Client, w workload, pool string, extra ...string) (res executorResult, err error) {
	out := "out-" + pool
	for _, topic := range []string{out, "dlq-" + pool} {
		if err := client.EnsureTopic(topic, w.partitions); err != nil {
			return res, err
		}
	}
	ends, err := w.ends(client)
	if err != nil {
		return res, err
	}
	var lag *syncLag
	if w.partitions == 1 {
		if lag, err = watchSyncLag(ctx, r.client, s.dsn, pool); err != nil {
			return res, err
		}
		defer func() {
			max, lerr := lag.stop()
			res.lag, err = max, errors.Join(err, lerr)
		}()
	}
	if err := r.resetStats(ctx); err != nil {
		return res, err
	}
	profiling := profileDir != "" && w.partitions == 1
	if profiling {
		extra = append(extra, "--pprof")
	}
	var runs []*executorRun
	defer func() {
		for _, e := range runs {
			e.kill()
		}
	}()
	for p := range w.partitions {
		e, err := startExecutor(ctx, s, cfg, w.topic, p, pool, out, extra...)
		if err != nil {
			return res, err
		}
		runs = append(runs, e)
	}
	var profiled sync.WaitGroup
	var profileErr error
	if profiling {
		profiled.Add(1)
		go func() {
			defer profiled.Done()
			profileErr = runs[0].profile(ctx, "profile", profileSeconds, filepath.Join(profileDir, "executor-"+pool+".pprof"))
		}()
	}
	alive := func() error {
		for _, e := range runs {
			if err := e.gone(); err != nil {
				return err
			}
		}
		return nil
	}
	win, err := watchCommits(ctx, r, client, config.Group(pool), w, ends, alive)
	profiled.Wait()
	if err = errors.Join(err, profileErr); err != nil {
		return res, err
	}
	if w.partitions == 1 {
		if res.timings, err = runs[0].timings(ctx); err != nil {
			return res, err
		}
	}
	if profiling {
		if err := runs[0].profile(ctx, "heap", 0, filepath.Join(profileDir, "executor-"+pool+".heap")); err != nil {
			return res, err
		}
	}
	var processCPU time.Duration
	for _, e := range runs {
		rss, err := peakRSS(e.cmd.Process.Pid)
		if err != nil {
			return res, err
		}
		res.rss = max(res.rss, rss)
		res.anon = max(res.anon, e.anon.Load())
		cpu, err := e.stop()
		if err != nil {
			return res, err
		}
		processCPU += cpu
	}
	commands, err := r.commands(ctx)
	if err != nil {
		return res, err
	}
	docs := 0.8 * float64(w.n)
	span := win.end.Sub(win.start)
	res.docsPerSec = docs / span.Seconds()
	res.machineUS = float64(win.busy.Microseconds()) / docs
	res.redisUS = float64(win.redis.Microseconds()) / docs
	res.processUS = float64(processCPU.Microseconds()) / float64(w.n)
	res.busy = win.busy.Seconds() / (span.Seconds() * float64(runtime.NumCPU()))
	res.redisBusy = win.redis.Seconds() / span.Seconds()
	res.commands = commands.perDoc(w.n)
	return res, nil
}

// ends returns the end offset of each partition of w's topic.
func (w workload) ends(client *kafka.Client) ([]int64, error) {
	ends := make([]int64, w.partitions)
	var total int64
	for p := range w.partitions {
		end, err := client.Offset(w.topic, p, kafka.Latest)
		if err != nil {
			return nil, err
		}
		ends[p] = end
		total += end
	}
	if total != int64(w.n) {
		return nil, fmt.Errorf("%s holds %d messages, want %d", w.topic, total, w.n)
	}
	return ends, nil
}

// window is the part of a run between 10% and 90% of its messages
// committed, and the CPU the machine and Redis used in it.
type window struct {
	start, end  time.Time
	busy, redis time.Duration
}

// watchCommits polls the group's commits until all of w is committed and
// returns the window, or the error of alive, which says whether the
// executors still run.
func watchCommits(ctx context.Context, r redisServers, client *kafka.Client, group string, w workload, ends []int64, alive func() error) (window, error) {
	var win window
	marks := []float64{0.1, 0.9}
	snap := func() (time.Time, time.Duration, time.Duration, error) {
		busy, err := busyTicks()
		if err != nil {
			return time.Time{}, 0, 0, err
		}
		redis, err := r.cpu(ctx)
		return time.Now(), time.Duration(busy) * 10 * time.Millisecond, redis, err
	}
	start := time.Now()
	for {
		lag, err := client.Lag(group, w.topic, w.partitions)
		if err != nil {
			return win, err
		}
		var committed int64
		for p, l := range lag {
			committed += ends[p] - l
		}
		for len(marks) > 0 && float64(committed) >= marks[0]*float64(w.n) {
			at, busy, redis, err := snap()
			if err != nil {
				return win, err
			}
			if len(marks) == 2 {
				win.start, win.busy, win.redis = at, -busy, -redis
			} else {
				win.end, win.busy, win.redis = at, win.busy+busy, win.redis+redis
			}
			marks = marks[1:]
		}
		if committed == int64(w.n) {
			return win, nil
		}
		if err := alive(); err != nil {
			return win, err
		}
		if time.Since(start) > 10*time.Minute {
			return win, errors.New("the executors did not finish in 10 minutes")
		}
		select {
		case <-ctx.Done():
			return win, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
