package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/internal/testenv"
)

// executorRun is one `docexec executor` process serving one partition.
type executorRun struct {
	cmd       *exec.Cmd
	listen    string
	pool      string
	partition int32
	// exited is closed when the process has ended, err then says how.
	exited chan struct{}
	err    error
	// anon is the largest anonymous RSS seen (sampled every 50 ms while it
	// runs): the heap and stacks, without the binary's code mapped from
	// its file; sampled is closed when sampling ended.
	anon    atomic.Int64
	sampled chan struct{}
}

// startExecutor starts `docexec executor` for a partition of topic as pool,
// publishing to out.
func startExecutor(ctx context.Context, s servers, cfg kafka.Config, topic string, partition int32, pool, out string, extra ...string) (*executorRun, error) {
	port, err := testenv.FreePort()
	if err != nil {
		return nil, err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.CommandContext(ctx, s.binary, "executor", "--pool", pool, "--partition", strconv.Itoa(int(partition)),
		"--kafka.brokers", strings.Join(cfg.Brokers, ","), "--kafka.inputTopic", topic, "--kafka.outputTopic", out,
		"--kafka.deadLetterTopic", "dlq-"+pool,
		"--redis.addresses", strings.Join(s.redis, ","), "--postgres.dsn", s.dsn,
		"--batch.size", strconv.Itoa(batch), "--listen", listen, "--logFormat", "text")
	if cfg.Compression != "" {
		cmd.Args = append(cmd.Args, "--kafka.compression", cfg.Compression)
	}
	cmd.Args = append(cmd.Args, strings.Fields(executorFlags)...)
	cmd.Args = append(cmd.Args, extra...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the executor: %w", err)
	}
	e := &executorRun{cmd: cmd, listen: listen, pool: pool, partition: partition, exited: make(chan struct{}), sampled: make(chan struct{})}
	go func() {
		defer close(e.exited)
		e.err = cmd.Wait()
	}()
	go e.sampleAnon()
	return e, nil
}

// sampleAnon records the process's anonymous RSS until it exits.
func (e *executorRun) sampleAnon() {
	defer close(e.sampled)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if kb, err := statusKB(e.cmd.Process.Pid, "RssAnon"); err == nil && kb<<10 > e.anon.Load() {
			e.anon.Store(kb << 10)
		}
		select {
		case <-e.exited:
			return
		case <-tick.C:
		}
	}
}

// stop ends the executor with SIGTERM (its last sync included) and returns
// the CPU time it used in all.
func (e *executorRun) stop() (time.Duration, error) {
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, err
	}
	<-e.exited
	<-e.sampled
	if e.err != nil {
		return 0, fmt.Errorf("executor exit: %w", e.err)
	}
	return e.cmd.ProcessState.UserTime() + e.cmd.ProcessState.SystemTime(), nil
}

// kill ends an executor that failed the run.
func (e *executorRun) kill() {
	e.cmd.Process.Kill() //nolint:errcheck // it may be gone
	<-e.exited
	<-e.sampled
}

// gone returns an error when the executor has exited.
func (e *executorRun) gone() error {
	select {
	case <-e.exited:
		return fmt.Errorf("executor of %s partition %d exited before the end: %v", e.pool, e.partition, e.err)
	default:
		return nil
	}
}

// profile saves a profile of the executor (run with --pprof): "profile"
// is its CPU over the next seconds, "heap" its allocations so far.
func (e *executorRun) profile(ctx context.Context, kind string, seconds int, path string) error {
	url := fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", e.listen, kind, seconds)
	if kind == "heap" {
		url = fmt.Sprintf("http://%s/debug/pprof/heap", e.listen)
	}
	var resp *http.Response
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) { // until it listens
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err = http.DefaultClient.Do(req); err == nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			return fmt.Errorf("profile the executor: %w", err)
		}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile the executor: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// passthroughProcess runs (a) as a child process of this binary (see
// passthroughMain), so that its CPU time is its own, and returns the time
// it took for the middle 80% of the messages and its whole CPU time.
func passthroughProcess(ctx context.Context, cfg kafka.Config, w workload, out string) (elapsed, cpu time.Duration, err error) {
	args := []string{"passthrough", "-brokers", strings.Join(cfg.Brokers, ","), "-topic", w.topic,
		"-n", strconv.Itoa(w.n), "-out", out, "-compression", cfg.Compression}
	if profileDir != "" {
		args = append(args, "-cpuprofile", filepath.Join(profileDir, "passthrough-"+out+".pprof"))
	}
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Stderr = os.Stderr
	raw, err := cmd.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("passthrough process: %w", err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("passthrough process printed %q: %w", raw, err)
	}
	return time.Duration(ns), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// timings reads from the executor's metrics where its batches' time went:
// the sums of its batch, Redis and publish durations, and the batch count.
func (e *executorRun) timings(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.listen+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("metrics of the executor: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	value := func(name string) float64 {
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, name+"{") {
				v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
				return v
			}
		}
		return 0
	}
	return fmt.Sprintf("%.0f batches: decode + merge + Redis %.2f s (of which merge and Redis write %.2f s), Kafka transactions %.2f s, sync passes %.2f s",
		value("docexec_batch_duration_seconds_count"), value("docexec_batch_duration_seconds_sum"), value("docexec_redis_duration_seconds_sum"),
		value("docexec_publish_duration_seconds_sum"), value("docexec_sync_duration_seconds_sum")), nil
}

// machineCPU runs f and returns the CPU time that every process of the
// machine used meanwhile (from /proc/stat): on a small box the executor,
// Redis, PostgreSQL and the broker share the cores.
func machineCPU(f func() error) (time.Duration, error) {
	before, err := busyTicks()
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	after, err := busyTicks()
	if err != nil {
		return 0, err
	}
	return time.Duration(after-before) * 10 * time.Millisecond, nil
}

// busyTicks sums the jiffies (1/100 s) that all cores spent running this
// machine's work: user, nice, system, irq and softirq. Steal (the host
// running another machine on our cores) is not our work; guest time is
// counted within user already.
func busyTicks() (int64, error) {
	busy, _, err := cpuTicks()
	return busy, err
}

// stealTicks is the jiffies the host took from this machine's cores.
func stealTicks() (int64, error) {
	_, steal, err := cpuTicks()
	return steal, err
}

func cpuTicks() (busy, steal int64, err error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	fields := strings.Fields(strings.SplitN(string(raw), "\n", 2)[0])[1:]
	for i, f := range fields {
		v, _ := strconv.ParseInt(f, 10, 64)
		switch i {
		case 0, 1, 2, 5, 6: // user, nice, system, irq, softirq
			busy += v
		case 7:
			steal = v
		}
	}
	return busy, steal, nil
}

// peakRSS reads VmHWM of a running process, in bytes: its peak RSS, the
// binary's code mapped from its file included.
func peakRSS(pid int) (int64, error) {
	kb, err := statusKB(pid, "VmHWM")
	return kb << 10, err
}

// statusKB reads a field of /proc/PID/status, in kB.
func statusKB(pid int, field string) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
