// Package failpoint lets tests kill an executor at a precise moment, the
// way a crash would: `DOCEXEC_FAILPOINT=after-redis-write:3` makes the
// process SIGKILL itself right after its third batch is written to Redis,
// before that batch is published — inside the window that exactly-once
// recovery must close. Unset, as in production, Hit costs one atomic load.
package failpoint

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// The failpoints the executor has.
const (
	// AfterRedisWrite is hit after each batch's write to Redis and before
	// its publication.
	AfterRedisWrite = "after-redis-write"
)

var (
	armed     = sync.OnceValues(parse)
	remaining atomic.Int64
)

// parse reads DOCEXEC_FAILPOINT: name:n.
func parse() (string, bool) {
	name, n, ok := strings.Cut(os.Getenv("DOCEXEC_FAILPOINT"), ":")
	count, err := strconv.Atoi(n)
	if !ok || err != nil || count < 1 {
		return "", false
	}
	remaining.Store(int64(count))
	return name, true
}

// Hit marks the passing of failpoint name; the n-th passing of the armed
// one kills the process.
func Hit(name string) {
	armedName, ok := armed()
	if !ok || armedName != name {
		return
	}
	if remaining.Add(-1) == 0 {
		syscall.Kill(os.Getpid(), syscall.SIGKILL) //nolint:errcheck // it does not return
	}
}
