package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// RedisCluster is a private Redis Cluster of three masters (no replicas),
// stopped when the test ends: real redis-server processes with
// cluster-enabled, joined by redis-cli --cluster create.
type RedisCluster struct {
	ports []int
	dir   string
}

// OwnRedisCluster starts one, stopped when t ends.
func OwnRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	need(t, "DOCEXEC_TEST_REDIS", "a redis-server") // the same package makes this one possible
	c, err := StartRedisCluster(t.TempDir())
	if c != nil {
		t.Cleanup(c.Stop)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// StartRedisCluster starts one whose servers keep their files under dir.
// Stop it even when it returns an error with a cluster.
func StartRedisCluster(dir string) (*RedisCluster, error) {
	c := &RedisCluster{dir: dir}
	var addrs []string
	for i := range 3 {
		port, err := FreePort()
		if err != nil {
			return c, err
		}
		dir := filepath.Join(c.dir, strconv.Itoa(port))
		if err := os.Mkdir(dir, 0o755); err != nil {
			return c, err
		}
		out, err := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
			"--save", "", "--appendonly", "no", "--daemonize", "yes",
			"--pidfile", filepath.Join(dir, "redis.pid"), "--logfile", filepath.Join(dir, "redis.log")).CombinedOutput()
		if err != nil {
			return c, fmt.Errorf("start redis-server %d of the cluster: %w\n%s", i, err, out)
		}
		c.ports = append(c.ports, port)
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", port))
	}
	for _, port := range c.ports {
		if err := c.waitFor(port, "PING", "PONG"); err != nil {
			return c, err
		}
	}
	create := append([]string{"--cluster", "create"}, addrs...)
	if out, err := exec.Command("redis-cli", append(create, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput(); err != nil {
		return c, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	for _, port := range c.ports {
		if err := c.waitFor(port, "CLUSTER INFO", "cluster_state:ok"); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Stop shuts every server down.
func (c *RedisCluster) Stop() {
	for _, port := range c.ports {
		c.cli(port, "SHUTDOWN", "NOSAVE") //nolint:errcheck // it stops
	}
}

// Seeds are the addresses of the masters.
func (c *RedisCluster) Seeds() []string {
	out := make([]string, len(c.ports))
	for i, p := range c.ports {
		out[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return out
}

// Client returns a rueidis client of the cluster, closed when t ends.
func (c *RedisCluster) Client(t testing.TB) rueidis.Client {
	t.Helper()
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: c.Seeds(), DisableCache: true})
	if err != nil {
		t.Fatalf("connect to the Redis Cluster: %v", err)
	}
	t.Cleanup(client.Close)
	return client
}

// MoveSlotOf moves the hash slot of key to another master, as
// redis-cli --cluster reshard does (IMPORTING/MIGRATING, MIGRATE of its keys
// in batches, the slot given to its new owner), while clients go on using
// it. It returns the port of the new owner.
func (c *RedisCluster) MoveSlotOf(t testing.TB, key string) int {
	t.Helper()
	slot := strings.TrimSpace(c.mustCli(t, c.ports[0], "CLUSTER", "KEYSLOT", key))
	from := c.owner(t, slot)
	to := c.ports[0]
	for _, p := range c.ports {
		if p != from {
			to = p
			break
		}
	}
	fromID, toID := c.nodeID(t, from), c.nodeID(t, to)
	c.mustCli(t, to, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID)
	c.mustCli(t, from, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID)
	for {
		keys := strings.Fields(c.mustCli(t, from, "CLUSTER", "GETKEYSINSLOT", slot, "100"))
		if len(keys) == 0 {
			break
		}
		args := append([]string{"MIGRATE", "127.0.0.1", strconv.Itoa(to), "", "0", "10000", "KEYS"}, keys...)
		if out := c.mustCli(t, from, args...); !strings.Contains(out, "OK") && !strings.Contains(out, "NOKEY") {
			t.Fatalf("MIGRATE: %s", out)
		}
	}
	for _, p := range c.ports {
		c.mustCli(t, p, "CLUSTER", "SETSLOT", slot, "NODE", toID)
	}
	return to
}

// owner returns the port of the master that serves slot.
func (c *RedisCluster) owner(t testing.TB, slot string) int {
	t.Helper()
	n, _ := strconv.Atoi(slot)
	for _, line := range strings.Split(c.mustCli(t, c.ports[0], "CLUSTER", "NODES"), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.Contains(f[2], "master") {
			continue
		}
		for _, r := range f[8:] {
			lo, hi, found := strings.Cut(r, "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if found {
				b, _ = strconv.Atoi(hi)
			}
			if a <= n && n <= b {
				port, _ := strconv.Atoi(f[1][strings.LastIndex(f[1], ":")+1 : strings.IndexAny(f[1], "@")])
				return port
			}
		}
	}
	t.Fatalf("no master serves slot %s", slot)
	return 0
}

func (c *RedisCluster) nodeID(t testing.TB, port int) string {
	t.Helper()
	return strings.TrimSpace(c.mustCli(t, port, "CLUSTER", "MYID"))
}

func (c *RedisCluster) waitFor(port int, command, want string) error {
	for range 200 {
		if out, err := c.cli(port, strings.Fields(command)...); err == nil && strings.Contains(string(out), want) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("redis-server %d: %s never said %s", port, command, want)
}

func (c *RedisCluster) mustCli(t testing.TB, port int, args ...string) string {
	t.Helper()
	out, err := c.cli(port, args...)
	if err != nil || strings.HasPrefix(string(out), "ERR") || strings.HasPrefix(string(out), "(error)") {
		t.Fatalf("redis-cli -p %d %v: %v %s", port, args, err, out)
	}
	return string(out)
}

func (c *RedisCluster) cli(port int, args ...string) ([]byte, error) {
	return exec.Command("redis-cli", append([]string{"-p", strconv.Itoa(port)}, args...)...).CombinedOutput()
}
