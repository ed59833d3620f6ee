// Package memlimit gives the Go runtime a soft memory limit below the
// container's, so that the garbage collector works harder as the heap nears
// the limit instead of the kernel killing the process: with GOGC alone the
// heap may grow to twice what is live before a collection.
package memlimit

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Share is the part of the container's limit given to the Go heap; the
// rest is for what the runtime does not count (stacks of cgo, the binary,
// the kernel's buffers of the process).
const Share = 0.9

// CgroupFile is where cgroup v2 shows the container's memory limit.
const CgroupFile = "/sys/fs/cgroup/memory.max"

// Set applies Share of the limit in CgroupFile as the runtime's soft memory
// limit, unless GOMEMLIMIT is set (the runtime applies that itself) or the
// container has no limit. It returns a description of what it did, for the
// log.
func Set() string {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		return "GOMEMLIMIT=" + v
	}
	raw, err := os.ReadFile(CgroupFile)
	limit, ok := parse(raw, err)
	if !ok {
		return "none (no container memory limit)"
	}
	debug.SetMemoryLimit(limit)
	return fmt.Sprintf("%d MiB, %.0f%% of the container's", limit>>20, 100*Share)
}

// parse reads the limit of a memory.max file and returns Share of it.
func parse(raw []byte, err error) (int64, bool) {
	if err != nil {
		return 0, false
	}
	v := strings.TrimSpace(string(raw))
	if v == "max" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || n == math.MaxInt64 {
		return 0, false
	}
	return int64(float64(n) * Share), true
}
