package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/executor/store"
	"github.com/docexec/docexec/internal/redact/redacttest"
	"github.com/docexec/docexec/internal/testenv"
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestTheExecutorProcessServesAndStopsCleanlyOnSIGTERM runs the real binary
// against kfake, redis-server and PostgreSQL: ready, processing, metrics,
// then SIGTERM → final sync and exit 0.
func TestTheExecutorProcessServesAndStopsCleanlyOnSIGTERM(t *testing.T) {
	brokers := testenv.Kafka(t, 1, "in", "out", "dlq")
	dsn := testenv.Postgres(t)
	redis := testenv.RedisAddr(t)
	bin := testenv.Docexec(t)
	listen := freeAddr(t)
	pool := fmt.Sprintf("proc%d", time.Now().UnixNano())
	cmd := exec.Command(bin, "executor", "--pool", pool, "--partition", "0", "--kafka.brokers", strings.Join(brokers, ","),
		"--kafka.inputTopic", "in", "--kafka.outputTopic", "out", "--kafka.deadLetterTopic", "dlq",
		"--redis.addresses", redis, "--listen", listen, "--sync.interval", "1h")
	cmd.Env = append(os.Environ(), "DOCEXEC_POSTGRES_DSN="+dsn) // secrets by environment
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck // only if the test failed early

	waitFor(t, "ready", func() bool { code, _ := get("http://" + listen + "/readyz"); return code == 200 })
	if code, _ := get("http://" + listen + "/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	producer, err := kafka.NewProducer(kafka.Config{Brokers: brokers}, kafka.DefaultMaxMessageBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	var msgs []kafka.Message
	for i := range 100 {
		msgs = append(msgs, kafka.Message{Topic: "in", Value: fmt.Appendf(nil, `{"url":"u%d","pubDate":1,"fetchTime":%d}`, i%10, i)})
	}
	msgs = append(msgs, kafka.Message{Topic: "in", Value: []byte("bad")})
	if err := producer.Send(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	label := fmt.Sprintf(`{partition="0",pool=%q}`, pool)
	waitFor(t, "all messages counted", func() bool {
		_, body := get("http://" + listen + "/metrics")
		return strings.Contains(body, "docexec_messages_in_total"+label+" 101") &&
			strings.Contains(body, fmt.Sprintf(`docexec_messages_dead_lettered_total{partition="0",pool=%q,reason="bad_input"} 1`, pool)) &&
			strings.Contains(body, "docexec_messages_emitted_total"+label+" 100")
	})

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit 30 s after SIGTERM\n%s", stderr.String())
	}
	// The sync interval is an hour: only the final sync can have stored this.
	st, err := store.OpenPostgres(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mark, found, err := st.Watermark(context.Background(), pool, 0)
	if err != nil || !found || mark.Offset != 101 {
		t.Fatalf("watermark %+v (found %v, %v), want 101 after the final sync\n%s", mark, found, err, stderr.String())
	}
}

func TestAnInvalidConfigurationExitsTwoNamingTheSetting(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := testenv.Docexec(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"executor", "--pool", "p"}, "kafka.brokers"},
		{[]string{"executor", "--pool", "p", "--kafka.brokers", "b", "--kafka.inputTopic", "t", "--kafka.outputTopic", "t", "--kafka.deadLetterTopic", "d"}, "kafka.outputTopic"},
		{[]string{"executor", "--batch.size", "many"}, "batch.size"},
		{[]string{"nonsense"}, "unknown command"},
	} {
		cmd := exec.Command(bin, c.args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		exit, ok := err.(*exec.ExitError)
		if !ok || exit.ExitCode() != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("%v: %v, output %q; want exit 2 naming %s", c.args, err, out, c.want)
		}
	}
}

// TestTheExecutorNeverPrintsItsSecrets starts the real binary with every
// spelling of a DSN password, against a port where nothing listens or with
// a DSN that does not parse, and with Redis and SASL passwords the servers
// refuse, and reads everything it prints and its /readyz.
func TestTheExecutorNeverPrintsItsSecrets(t *testing.T) {
	brokers := testenv.Kafka(t, 1, "in", "out", "dlq")
	redis, dsn := testenv.RedisAddr(t), testenv.Postgres(t)
	bin := testenv.Docexec(t)
	secret := "S3cret-" + redacttest.Marker
	for _, tc := range redacttest.DSNs(freeAddr(t)) {
		t.Run(tc.Name, func(t *testing.T) {
			neverPrints(t, bin, brokers, redis, []string{"DOCEXEC_POSTGRES_DSN=" + tc.DSN}, nil, "postgres")
		})
	}
	t.Run("a Redis password", func(t *testing.T) { // of a user the server does not know: refused
		neverPrints(t, bin, brokers, redis, []string{"DOCEXEC_POSTGRES_DSN=" + dsn, "DOCEXEC_REDIS_PASSWORD=" + secret},
			[]string{"--redis.username", "nobody"}, "redis")
	})
	t.Run("a SASL password", func(t *testing.T) {
		neverPrints(t, bin, brokers, redis, []string{"DOCEXEC_POSTGRES_DSN=" + dsn, "DOCEXEC_KAFKA_SASL_PASSWORD=" + secret},
			[]string{"--kafka.sasl.mechanism", "PLAIN", "--kafka.sasl.username", "docexec"}, "kafka")
	})
}

// neverPrints runs an executor with env and args until it has spoken of
// topic (and a few retries more), and fails if its output or /readyz shows
// any piece of a secret (redacttest.Marker).
func neverPrints(t *testing.T, bin string, brokers []string, redis string, env, args []string, topic string) {
	listen := freeAddr(t)
	cmd := exec.Command(bin, append([]string{"executor", "--pool", "secret", "--partition", "0", "--kafka.brokers", strings.Join(brokers, ","),
		"--kafka.inputTopic", "in", "--kafka.outputTopic", "out", "--kafka.deadLetterTopic", "dlq",
		"--redis.addresses", redis, "--listen", listen, "--logFormat", "text"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// It either refuses and exits, or says it cannot connect and waits.
	deadline := time.After(30 * time.Second)
	for exited := false; !strings.Contains(strings.ToLower(out.String()), topic); {
		select {
		case err := <-done:
			exited = true
			done <- err // for the wait below
		case <-deadline:
			t.Fatalf("nothing said about %s in 30 s:\n%s", topic, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if exited && !strings.Contains(strings.ToLower(out.String()), topic) {
			t.Fatalf("exited without a word about %s:\n%s", topic, out.String())
		}
	}
	time.Sleep(2 * time.Second) // a few retries more
	_, ready := get("http://" + listen + "/readyz")
	cmd.Process.Kill() //nolint:errcheck // may have exited
	<-done
	if strings.Contains(out.String()+ready, redacttest.Marker) {
		t.Fatalf("the output or /readyz shows (part of) a secret:\n%s\n/readyz: %s", out.String(), ready)
	}
}

// TestTopicsThatCannotServeThePartitionExitTwo starts the real binary on
// topics that cannot work — rather than retrying silently while /readyz
// says ready, it exits 2 naming the setting, once they stayed so for 10 s.
func TestTopicsThatCannotServeThePartitionExitTwo(t *testing.T) {
	brokers := testenv.Kafka(t, 2, "in", "out", "dlq")
	testenv.CreateTopic(t, brokers, "out1", 1, nil)
	redis, dsn := testenv.RedisAddr(t), testenv.Postgres(t)
	bin := testenv.Docexec(t)
	for _, tc := range []struct {
		name, in, out, dlq, partition, want string
	}{
		// Every case of the check is in kafka.TestCheckTopics; two here
		// show the process's way out.
		{"a missing output topic", "in", "nope", "dlq", "0", `kafka.outputTopic: topic "nope" does not exist`},
		{"an output topic with fewer partitions", "in", "out1", "dlq", "0", `kafka.outputTopic: topic "out1" has 1 partitions, fewer than the 2 of input topic "in"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each waits 10 s for the topics to come right
			cmd := exec.Command(bin, "executor", "--pool", "topo", "--partition", tc.partition, "--kafka.brokers", strings.Join(brokers, ","),
				"--kafka.inputTopic", tc.in, "--kafka.outputTopic", tc.out, "--kafka.deadLetterTopic", tc.dlq,
				"--redis.addresses", redis, "--listen", freeAddr(t), "--logFormat", "text")
			cmd.Env = append(os.Environ(), "DOCEXEC_POSTGRES_DSN="+dsn)
			out, err := cmd.CombinedOutput()
			exit, ok := err.(*exec.ExitError)
			said := strings.ReplaceAll(string(out), `\"`, `"`) // as the text log quotes it
			if !ok || exit.ExitCode() != 2 || !strings.Contains(said, tc.want) {
				t.Fatalf("%v; want exit 2 saying %s:\n%s", err, tc.want, out)
			}
		})
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
