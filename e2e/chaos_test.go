package e2e

import (
	"context"
	stdjson "encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/store"
	"github.com/docexec/docexec/internal/docgen"
	"github.com/docexec/docexec/internal/testenv"
)

// fleet is one partition served by executor processes electing a leader on
// a Lease of the test API server, with real Redis and PostgreSQL and kfake,
// fed web-like documents.
type fleet struct {
	c       *cluster
	bin     string
	kube    kubernetes.Interface
	brokers []string
	redis   string
	dsn     string
	pool    string
	mu      sync.Mutex
	procs   map[string]*proc
	logs    map[string]*testenv.Buffer
	listen  map[string]string // HTTP address of each executor
	next    int
	docs    docgen.Options // of the stream; its Seed grows as it is used up
	stream  [][]byte       // lines still to produce
	inputs  [][]byte       // lines produced
}

// servers are what a fleet runs against; zero fields get the shared test
// servers (a fresh kfake, the test redis-server, a fresh schema).
type servers struct {
	brokers []string
	redis   string
	dsn     string
}

func newFleet(t testing.TB, s servers) *fleet {
	c := newCluster(t)
	if s.brokers == nil {
		s.brokers = testenv.Kafka(t, 1, "in", "out", "dlq")
	}
	if s.redis == "" {
		s.redis = testenv.RedisAddr(t)
	}
	if s.dsn == "" {
		s.dsn = testenv.Postgres(t)
	}
	f := &fleet{c: c, bin: testenv.Docexec(t), brokers: s.brokers, redis: s.redis, dsn: s.dsn, docs: webDocs,
		pool: fmt.Sprintf("chaos%x", rand.Uint32()), procs: map[string]*proc{}, logs: map[string]*testenv.Buffer{}, listen: map[string]string{}}
	rc, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	f.kube = kubernetes.NewForConfigOrDie(rc)
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: f.pool + "-p0", Namespace: "default"}}
	if _, err := f.kube.CoordinationV1().Leases("default").Create(context.Background(), lease, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, p := range f.procs {
			p.cmd.Process.Kill() //nolint:errcheck
			<-p.done
		}
		if t.Failed() {
			for name, log := range f.logs {
				t.Logf("%s:\n%s", name, log.String())
			}
		}
	})
	return f
}

// proc is an executor process and the wait for its end (one waiter, so
// that an exit of its own, such as a failpoint's, is seen too).
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // once done
}

// start runs one more executor replica, like a new pod.
func (f *fleet) start() string {
	f.c.t.Helper()
	return f.startWith()
}

// startWith is start with more environment, such as a failpoint.
func (f *fleet) startWith(env ...string) string {
	f.c.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	name := fmt.Sprintf("executor-%d", f.next)
	f.listen[name] = freeAddr(f.c.t)
	cmd := exec.Command(f.bin, "executor", "--pool", f.pool, "--partition", "0", "--kafka.brokers", strings.Join(f.brokers, ","),
		"--kafka.inputTopic", "in", "--kafka.outputTopic", "out", "--kafka.deadLetterTopic", "dlq", "--redis.addresses", f.redis,
		"--listen", f.listen[name], "--batch.size", "100", "--sync.interval", "200ms", "--logFormat", "text",
		"--leader.lease", f.pool+"-p0", "--leader.namespace", "default", "--leader.identity", name,
		"--leader.leaseDuration", "2s", "--leader.renewDeadline", "1s", "--leader.retryPeriod", "200ms")
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+f.c.kubeconfig, "DOCEXEC_POSTGRES_DSN="+f.dsn), env...)
	f.logs[name] = &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = f.logs[name], f.logs[name]
	if err := cmd.Start(); err != nil {
		f.c.t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	f.procs[name] = p
	return name
}

// ready returns what /readyz of an executor answers: 200 or 503 (0 when
// it does not answer) and the body.
func (f *fleet) ready(name string) (int, string) {
	resp, err := http.Get("http://" + f.listen[name] + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// alive reports whether an executor's process still runs.
func (f *fleet) alive(name string) bool {
	f.mu.Lock()
	p := f.procs[name]
	f.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// dead returns the replicas whose process ended, and forgets them (their
// logs stay).
func (f *fleet) dead() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for name, p := range f.procs {
		select {
		case <-p.done:
			out = append(out, name)
			delete(f.procs, name)
		default:
		}
	}
	return out
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// leader waits for the Lease's holder and returns it.
func (f *fleet) leader(not string) string {
	var holder string
	f.c.eventually("a leader other than "+not, func() bool {
		l, err := f.kube.CoordinationV1().Leases("default").Get(context.Background(), f.pool+"-p0", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || *l.Spec.HolderIdentity == not {
			return false
		}
		holder = *l.Spec.HolderIdentity
		return true
	})
	return holder
}

func (f *fleet) signal(name string, sig syscall.Signal) {
	f.mu.Lock()
	p := f.procs[name]
	f.mu.Unlock()
	if err := p.cmd.Process.Signal(sig); err != nil {
		f.c.t.Fatal(err)
	}
	if sig == syscall.SIGKILL {
		<-p.done
		f.mu.Lock()
		delete(f.procs, name) // its log stays in f.logs
		f.mu.Unlock()
	}
}

// webDocs are the fleet's updates: 40 pages at a time, each of up to 60
// versions (so that a batch often holds several of one url), texts of
// kilobytes in every script, urls up to 8 KB, out of order and duplicated,
// with a few bad lines.
var webDocs = docgen.Options{URLs: 40, MaxVersions: 60, MaxMessageBytes: 256 << 10, BadLineRate: 0.005}

// more returns the lines of the fleet's next stream of updates.
func (f *fleet) more() ([][]byte, error) {
	f.docs.Seed++
	gen, err := docgen.New(f.docs)
	if err != nil {
		return nil, err
	}
	var lines [][]byte
	for l := range gen.Lines() {
		lines = append(lines, l.JSON)
	}
	return lines, nil
}

// produce sends the stream's next n lines.
func (f *fleet) produce(n int) {
	f.c.t.Helper()
	if err := f.tryProduce(n); err != nil {
		f.c.t.Fatal(err)
	}
}

// tryProduce is produce for goroutines other than the test's.
func (f *fleet) tryProduce(n int) error {
	p, err := kafka.NewProducer(kafka.Config{Brokers: f.brokers}, kafka.DefaultMaxMessageBytes)
	if err != nil {
		return err
	}
	defer p.Close()
	f.mu.Lock()
	for len(f.stream) < n {
		lines, err := f.more()
		if err != nil {
			f.mu.Unlock()
			return err
		}
		f.stream = append(f.stream, lines...)
	}
	lines := f.stream[:n]
	f.stream = f.stream[n:]
	f.mu.Unlock()
	msgs := make([]kafka.Message, len(lines))
	for i, l := range lines {
		msgs[i] = kafka.Message{Topic: "in", Value: l}
	}
	if err := p.Send(context.Background(), msgs); err != nil {
		return err
	}
	f.mu.Lock()
	f.inputs = append(f.inputs, lines...)
	f.mu.Unlock()
	return nil
}

// sequences returns, for each url, the states an uninterrupted leader
// publishes: one after each update (in offset order) that changes the
// url's state, computed by the oracle.
func sequences(inputs [][]byte) map[string][]document.Document {
	json, _ := codec.New("json")
	o := oracle{}
	out := map[string][]document.Document{}
	for _, v := range inputs {
		u, err := json.Decode(v)
		if err != nil {
			continue
		}
		prev, seen := o[u.URL]
		o.add(u)
		if !seen || o[u.URL] != prev {
			out[u.URL] = append(out[u.URL], o[u.URL])
		}
	}
	return out
}

// brief lists states without their texts, for messages.
func brief(states []document.Document) []string {
	out := make([]string, len(states))
	for i, d := range states {
		out[i] = fmt.Sprintf("{pub %d fetch %d first %d, %d bytes}", d.PubDate, d.FetchTime, d.FirstFetchTime, len(d.Text))
	}
	return out
}

// waitCommitted waits until every input is committed.
func (f *fleet) waitCommitted() {
	f.c.t.Helper()
	client, err := kafka.Connect(kafka.Config{Brokers: f.brokers})
	if err != nil {
		f.c.t.Fatal(err)
	}
	defer client.Close()
	f.c.eventually("every input is committed", func() bool {
		f.mu.Lock()
		n := len(f.inputs)
		f.mu.Unlock()
		off, _, err := client.Committed("docexec-"+f.pool, "in", 0)
		return err == nil && off == int64(n)
	})
}

// pauseTheLeaderPastItsLease starts two executors and produces n updates
// three times: while the first leader runs; once it is paused (SIGSTOP) and
// a standby has taken over; and once asleep has run and the old leader has
// woken (SIGCONT), mid-stream. It returns the old and the new leader.
func (f *fleet) pauseTheLeaderPastItsLease(n int, asleep func()) (old, newer string) {
	f.c.t.Helper()
	f.start()
	f.start()
	old = f.leader("")
	f.produce(n)
	time.Sleep(300 * time.Millisecond) // mid-stream
	f.signal(old, syscall.SIGSTOP)
	newer = f.leader(old) // a standby took over past the lease
	f.produce(n)
	time.Sleep(time.Second)
	asleep()
	f.signal(old, syscall.SIGCONT)
	f.produce(n)
	return old, newer
}

// check waits until every input is committed, stops the fleet and checks
// the guarantees against an oracle of all inputs, exactly-once output among
// them: every url's emissions are those of an uninterrupted leader.
func (f *fleet) check() {
	f.c.t.Helper()
	f.verify(true)
}

// checkAtLeastOnce is check for runs where Redis lost the partition: the
// output may repeat a state (never go backwards).
func (f *fleet) checkAtLeastOnce() {
	f.c.t.Helper()
	f.verify(false)
}

func (f *fleet) verify(exactly bool) {
	t := f.c.t
	t.Helper()
	f.waitCommitted()
	client, err := kafka.Connect(kafka.Config{Brokers: f.brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	f.mu.Lock()
	names := make([]string, 0, len(f.procs))
	for name := range f.procs {
		names = append(names, name)
	}
	f.mu.Unlock()
	for _, name := range names {
		f.mu.Lock()
		p := f.procs[name]
		f.mu.Unlock()
		select {
		case <-p.done:
			continue // a failpoint's death
		default:
		}
		f.signal(name, syscall.SIGTERM)
		<-p.done
		if p.err != nil {
			t.Fatalf("%s exited with %v after SIGTERM", name, p.err)
		}
	}

	json, _ := codec.New("json")
	final := oracle{}
	for _, v := range f.inputs {
		u, err := json.Decode(v)
		if err != nil {
			continue // a bad line: dead-lettered
		}
		final.add(u)
	}
	// PostgreSQL holds the oracle's states.
	st, err := store.OpenPostgres(context.Background(), f.dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	urls := make([]string, 0, len(final))
	for u := range final {
		urls = append(urls, u)
	}
	stored, err := st.Load(context.Background(), urls)
	if err != nil {
		t.Fatal(err)
	}
	for u, want := range final {
		if stored[u] != want {
			t.Fatalf("PostgreSQL has %+v for %s, want %+v", stored[u], u, want)
		}
	}
	// Emissions never go backwards and end at the oracle's state.
	r, err := client.Read(kafka.ReadOptions{Topic: "out", MaxRecords: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	end, _ := client.Offset("out", 0, kafka.Latest)
	last := map[string]document.Document{}
	emitted := map[string][]document.Document{}
read:
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		records, err := r.Poll(ctx)
		cancel()
		for _, m := range records {
			var s struct{ FirstFetchTime uint64 }
			d, err := json.Decode(m.Value)
			if err != nil {
				t.Fatalf("output %q: %v", m.Value, err)
			}
			if err := stdjson.Unmarshal(m.Value, &s); err != nil {
				t.Fatal(err)
			}
			d.FirstFetchTime = s.FirstFetchTime
			if prev, ok := last[d.URL]; ok && document.Merge(prev, d) != d {
				t.Fatalf("%s went backwards: %+v after %+v", d.URL, d, prev)
			}
			last[d.URL] = d
			emitted[d.URL] = append(emitted[d.URL], d)
			if m.Offset >= end-2 {
				break read
			}
		}
		if err != nil {
			break
		}
	}
	for u, want := range final {
		if last[u] != want {
			t.Fatalf("last emission of %s is %+v, want %+v", u, last[u], want)
		}
	}
	if exactly {
		for u, want := range sequences(f.inputs) {
			if got := emitted[u]; !slices.Equal(got, want) {
				t.Fatalf("%s: %d emissions, an uninterrupted leader's are %d: %v\nwant %v", u, len(got), len(want), brief(got), brief(want))
			}
		}
	}
	// Nothing is committed that Redis has not applied.
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{f.redis}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	applied, err := rc.Do(context.Background(), rc.B().Hget().Key(fmt.Sprintf("dx:{%s/0}:meta", f.pool)).Field("applied").Build()).AsInt64()
	committed, _, _ := client.Committed("docexec-"+f.pool, "in", 0)
	if err != nil || committed > applied {
		t.Fatalf("committed %d, applied %d (%v)", committed, applied, err)
	}
}

func TestChaosKillingTheLeaderThreeTimesLosesNothing(t *testing.T) {
	f := newFleet(t, servers{})
	f.start()
	f.start()
	leader := f.leader("")
	// DOCEXEC_CHAOS_ROUNDS=N makes it a soak (make test runs 3).
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("DOCEXEC_CHAOS_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	for range rounds {
		f.produce(250)
		time.Sleep(300 * time.Millisecond) // mid-stream
		f.signal(leader, syscall.SIGKILL)
		f.start() // the Deployment replaces the pod
		leader = f.leader(leader)
	}
	f.produce(250)
	f.check()
}

func TestChaosAPausedLeaderCannotWriteWhenItWakes(t *testing.T) {
	f := newFleet(t, servers{})
	old, _ := f.pauseTheLeaderPastItsLease(250, func() {}) // it wakes mid-batch: fenced
	f.check()
	f.mu.Lock()
	log := f.logs[old].String()
	f.mu.Unlock()
	// It tried to write (its final sync at least) and was refused.
	if !strings.Contains(log, "Fenced by a newer leader") {
		t.Fatalf("the woken leader was never fenced:\n%s", log)
	}
}

func TestChaosWipingRedisMidStreamLosesNothing(t *testing.T) {
	f := newFleet(t, servers{})
	f.start()
	f.start()
	f.leader("")
	f.produce(375)
	time.Sleep(300 * time.Millisecond)
	testenv.WipePool(t, testenv.Redis(t), f.pool) // as a Redis restart without persistence
	f.produce(375)
	f.checkAtLeastOnce() // Redis lost what it had: the one case without exactly-once output
}

func TestChaosStoppingPostgreSQLMidStreamLosesNothing(t *testing.T) {
	pg := testenv.OwnPostgres(t)
	f := newFleet(t, servers{dsn: pg.DSN})
	f.start()
	f.start()
	f.leader("")
	f.produce(250)
	time.Sleep(300 * time.Millisecond)
	pg.Stop(t)
	f.produce(250)
	time.Sleep(time.Second) // five sync intervals fail; processing goes on
	pg.Start(t)
	f.produce(250)
	f.check()
}

// TestChaosAWokenLeaderThatFindsRedisLostDoesNotTakeOver pauses the leader
// past its lease, lets a standby take over, wipes Redis, and wakes the old
// leader: it finds the partition lost, but it is no longer the leader, so
// it must not claim the partition again while the new one leads (that would
// open the partition's producer and fence the new leader). It may lead
// again once the new leader gives the Lease up (it lost Redis too).
func TestChaosAWokenLeaderThatFindsRedisLostDoesNotTakeOver(t *testing.T) {
	f := newFleet(t, servers{})
	_, newer := f.pauseTheLeaderPastItsLease(150, func() { testenv.WipePool(t, testenv.Redis(t), f.pool) })
	f.checkAtLeastOnce()
	f.mu.Lock()
	defer f.mu.Unlock()
	if log := f.logs[newer].String(); strings.Contains(log, "Fenced") {
		t.Fatalf("the new leader was fenced by the woken one:\n%s", log)
	}
}

// TestChaosLeadersDyingBetweenRedisAndKafkaLeaveOutputExactlyOnce arms
// every replica to kill itself right after its k-th batch reached Redis
// and before Kafka has it (a failpoint), k drawn at random: leader after
// leader dies inside the window that exactly-once recovery must close,
// while replacements start as a Deployment's would. DOCEXEC_CHAOS_ROUNDS=20
// for more deaths.
func TestChaosLeadersDyingBetweenRedisAndKafkaLeaveOutputExactlyOnce(t *testing.T) {
	f := newFleet(t, servers{})
	armed := func() string {
		return f.startWith(fmt.Sprintf("DOCEXEC_FAILPOINT=after-redis-write:%d", 1+rand.IntN(3)))
	}
	armed()
	armed()
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("DOCEXEC_CHAOS_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	deadline := time.Now().Add(3 * time.Minute)
	for died := 0; died < rounds; {
		if time.Now().After(deadline) {
			t.Fatalf("%d leaders died in the window in 3 minutes, want %d", died, rounds)
		}
		f.produce(60) // more batches, until the leader's k-th
		time.Sleep(200 * time.Millisecond)
		for range f.dead() {
			died++
			armed() // the Deployment replaces the pod
		}
	}
	f.start() // one that lives, to finish
	f.produce(120)
	f.check()
	// Each death left a batch applied but not published, which the next
	// leader published as recorded.
	republished := 0
	f.mu.Lock()
	for _, log := range f.logs {
		republished += len(regexp.MustCompile(`republished=[1-9]`).FindAllString(log.String(), -1))
	}
	f.mu.Unlock()
	if republished < rounds {
		t.Fatalf("%d terms began by publishing recorded batches, want at least %d (one per death in the window)", republished, rounds)
	}
}

// TestChaosGracefulHandoversAreExactlyOnce stops the leader with SIGTERM
// three times mid-stream, as rollouts and drains do: each hands over after
// its last batch, and the output is an uninterrupted leader's.
func TestChaosGracefulHandoversAreExactlyOnce(t *testing.T) {
	f := newFleet(t, servers{})
	f.start()
	f.start()
	leader := f.leader("")
	for range 3 {
		f.produce(150)
		time.Sleep(300 * time.Millisecond) // mid-stream
		f.mu.Lock()
		p := f.procs[leader]
		f.mu.Unlock()
		f.signal(leader, syscall.SIGTERM)
		<-p.done
		if p.err != nil {
			t.Fatalf("%s exited with %v after SIGTERM", leader, p.err)
		}
		f.start() // the rollout's new pod
		leader = f.leader(leader)
	}
	f.produce(150)
	f.check()
}
