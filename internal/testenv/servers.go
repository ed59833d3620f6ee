package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// freePort returns a TCP port of 127.0.0.1 that nothing listens on.
func freePort(t testing.TB) int {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// FreePort is freePort outside a test.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// RestartableKafka is an in-process broker that keeps its log in a
// directory and listens on a fixed port, so that a test can stop it and
// start it again the way a real broker restarts: clients see it go away
// and come back with every record, offset and transaction it had.
type RestartableKafka struct {
	t    testing.TB
	dir  string
	port int
	mu   sync.Mutex
	c    *kfake.Cluster
}

// NewRestartableKafka starts one, holding topics of the given partition
// count, stopped when t ends.
func NewRestartableKafka(t testing.TB, partitions int32, topics ...string) *RestartableKafka {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: runs a broker")
	}
	k := &RestartableKafka{t: t, dir: t.TempDir(), port: freePort(t)}
	k.start(kfake.SeedTopics(partitions, topics...))
	t.Cleanup(k.Stop)
	return k
}

// Addrs returns the broker's address.
func (k *RestartableKafka) Addrs() []string { return []string{fmt.Sprintf("127.0.0.1:%d", k.port)} }

// Stop closes the broker; its clients' connections drop.
func (k *RestartableKafka) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
}

// Start starts it again with what it had.
func (k *RestartableKafka) Start() { k.start() }

func (k *RestartableKafka) start(opts ...kfake.Opt) {
	k.t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	opts = append(opts, kfake.NumBrokers(1), kfake.Ports(k.port), kfake.DataDir(k.dir))
	var err error
	for range 50 { // the port may linger a moment after a stop
		if k.c, err = kfake.NewCluster(opts...); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	k.t.Fatalf("start kfake on port %d: %v", k.port, err)
}

// RedisServer is a private redis-server with a data directory: a test may
// stop it and start it again with its data, or make it come back older
// than it was (from a dump saved earlier), as a restored snapshot or a
// promoted replica does.
type RedisServer struct {
	dir  string
	port int
}

// OwnRedis starts a private redis-server, stopped when t ends.
func OwnRedis(t testing.TB) *RedisServer {
	t.Helper()
	need(t, "DOCEXEC_TEST_REDIS", "a redis-server") // the same package makes this one possible
	r := &RedisServer{dir: t.TempDir(), port: freePort(t)}
	r.Start(t)
	t.Cleanup(func() { r.cli("SHUTDOWN", "NOSAVE") }) //nolint:errcheck // may be stopped already
	return r
}

// Addr returns host:port.
func (r *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// Start starts the server; it loads the dump in its directory, if any.
func (r *RedisServer) Start(t testing.TB) {
	t.Helper()
	out, err := exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no", "--daemonize", "yes",
		"--pidfile", filepath.Join(r.dir, "redis.pid"), "--logfile", filepath.Join(r.dir, "redis.log")).CombinedOutput()
	if err != nil {
		t.Fatalf("start redis-server: %v\n%s", err, out)
	}
	for range 100 {
		if _, err := r.cli("PING"); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
	t.Fatalf("redis-server on port %d does not answer:\n%s", r.port, log)
}

// Save writes a dump of the data now (what a later StopLosingSince brings
// back).
func (r *RedisServer) Save(t testing.TB) {
	t.Helper()
	if out, err := r.cli("SAVE"); err != nil {
		t.Fatalf("redis SAVE: %v: %s", err, out)
	}
}

// Stop stops the server, saving its data for the next Start.
func (r *RedisServer) Stop(t testing.TB) {
	t.Helper()
	r.shutdown(t, "SAVE")
}

// StopLosingSinceSave stops the server without saving: the next Start
// brings back the data of the last Save, older than what clients wrote.
func (r *RedisServer) StopLosingSinceSave(t testing.TB) {
	t.Helper()
	r.shutdown(t, "NOSAVE")
}

func (r *RedisServer) shutdown(t testing.TB, mode string) {
	t.Helper()
	r.cli("SHUTDOWN", mode) //nolint:errcheck // the connection drops as it stops
	for range 100 {
		if _, err := r.cli("PING"); err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("redis-server on port %d does not stop", r.port)
}

func (r *RedisServer) cli(args ...string) ([]byte, error) {
	return exec.Command("redis-cli", append([]string{"-p", strconv.Itoa(r.port)}, args...)...).CombinedOutput()
}

// Buffer is a bytes.Buffer that a process writes while a test reads it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// RefusedProduce is the broker's answer to req refusing every partition of
// it with code: for kfake control functions that inject produce errors.
func RefusedProduce(req *kmsg.ProduceRequest, code int16) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
