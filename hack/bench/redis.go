package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// redisServers is the Redis of a measurement: one server or the masters of
// a cluster, whose figures are summed.
type redisServers struct {
	addrs  []string
	client rueidis.Client
}

func connectRedis(addrs []string) (redisServers, error) {
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		return redisServers{}, fmt.Errorf("connect to Redis %v: %w", addrs, err)
	}
	return redisServers{addrs: addrs, client: client}, nil
}

// info returns INFO section of every node.
func (r redisServers) info(ctx context.Context, section string) ([]string, error) {
	var out []string
	for addr, node := range r.client.Nodes() {
		s, err := node.Do(ctx, node.B().Info().Section(section).Build()).ToString()
		if err != nil {
			return nil, fmt.Errorf("INFO %s of %s: %w", section, addr, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// cpu returns the CPU time the servers used so far.
func (r redisServers) cpu(ctx context.Context) (time.Duration, error) {
	infos, err := r.info(ctx, "cpu")
	if err != nil {
		return 0, err
	}
	var total float64
	for _, info := range infos {
		for _, line := range strings.Split(info, "\r\n") {
			for _, key := range []string{"used_cpu_sys:", "used_cpu_user:"} {
				if v, ok := strings.CutPrefix(line, key); ok {
					f, _ := strconv.ParseFloat(v, 64)
					total += f
				}
			}
		}
	}
	return time.Duration(total * float64(time.Second)), nil
}

// resetStats zeroes the command statistics of every node.
func (r redisServers) resetStats(ctx context.Context) error {
	for addr, node := range r.client.Nodes() {
		if err := node.Do(ctx, node.B().ConfigResetstat().Build()).Error(); err != nil {
			return fmt.Errorf("CONFIG RESETSTAT of %s: %w", addr, err)
		}
	}
	return nil
}

// commandTimes is the time redis-server spent in each command (INFO
// commandstats).
type commandTimes map[string]time.Duration

// commands reads the time spent per command since the last resetStats.
func (r redisServers) commands(ctx context.Context) (commandTimes, error) {
	infos, err := r.info(ctx, "commandstats")
	if err != nil {
		return nil, err
	}
	out := commandTimes{}
	for _, info := range infos {
		for _, line := range strings.Split(info, "\r\n") {
			name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
			if !ok || !strings.HasPrefix(line, "cmdstat_") {
				continue
			}
			for _, field := range strings.Split(rest, ",") {
				if v, ok := strings.CutPrefix(field, "usec="); ok {
					us, _ := strconv.ParseInt(v, 10, 64)
					out[name] += time.Duration(us) * time.Microsecond
				}
			}
		}
	}
	return out, nil
}

// perDoc lists the commands, most costly first, in µs per document (those
// under 0.01 left out). Commands run by scripts or transactions count both
// under their own name and within the script's EVALSHA or the EXEC.
func (c commandTimes) perDoc(n int) string {
	names := make([]string, 0, len(c))
	for name := range c {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return c[names[i]] > c[names[j]] })
	var parts []string
	for _, name := range names {
		if us := float64(c[name].Microseconds()) / float64(n); us >= 0.01 {
			parts = append(parts, fmt.Sprintf("%s %.2f", name, us))
		}
	}
	return strings.Join(parts, ", ")
}
