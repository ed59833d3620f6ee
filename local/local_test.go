package local_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docexec/docexec/internal/docgen"
	"github.com/docexec/docexec/local"
)

type doc struct {
	URL            string `json:"url"`
	PubDate        uint64 `json:"pubDate"`
	FetchTime      uint64 `json:"fetchTime"`
	Text           string `json:"text"`
	FirstFetchTime uint64 `json:"firstFetchTime"`
}

// oracle computes, independently of the executor's code, each url's final
// state straight from the rule's definition (newest text and fetchTime,
// oldest pubDate and fetchTime) and how many updates change the state.
func oracle(updates []doc) (final map[string]doc, changes int) {
	final = map[string]doc{}
	for _, u := range updates {
		s, seen := final[u.URL]
		switch {
		case !seen:
			s = u
			s.FirstFetchTime = u.FetchTime
		case u.FetchTime > s.FetchTime:
			s.FetchTime, s.Text = u.FetchTime, u.Text
		case u.FetchTime < s.FirstFetchTime:
			s.FirstFetchTime, s.PubDate = u.FetchTime, u.PubDate
		default:
			continue
		}
		changes++
		final[u.URL] = s
	}
	return final, changes
}

// stream returns updates of urls with unique fetch times per url, shuffled
// and with duplicates, as JSONL with bad lines and blank lines mixed in.
func stream(n, urls int) (lines []string, updates []doc, bad int) {
	r := rand.New(rand.NewPCG(7, 7))
	for i := range n {
		u := doc{URL: fmt.Sprintf("https://s%d.example/p?q=%d", r.IntN(urls), i%3), FetchTime: uint64(r.IntN(1 << 20)), PubDate: r.Uint64()}
		u.FetchTime = u.FetchTime<<20 | uint64(i) // unique per url
		u.Text = fmt.Sprintf("text \"%d\" ✓", u.FetchTime)
		updates = append(updates, u)
		if r.IntN(5) == 0 {
			updates = append(updates, u)
		}
	}
	r.Shuffle(len(updates), func(i, j int) { updates[i], updates[j] = updates[j], updates[i] })
	for i, u := range updates {
		b, _ := json.Marshal(struct {
			URL       string `json:"url"`
			PubDate   uint64 `json:"pubDate"`
			FetchTime uint64 `json:"fetchTime"`
			Text      string `json:"text"`
		}{u.URL, u.PubDate, u.FetchTime, u.Text})
		lines = append(lines, string(b))
		if i%500 == 0 {
			lines = append(lines, `{"url": "x", "fetchTime": -1}`, ``, `not json`)
			bad += 2
		}
	}
	return lines, updates, bad
}

func readLines[T any](t *testing.T, path string) []T {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if l == "" {
			continue
		}
		var v T
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		out = append(out, v)
	}
	return out
}

func TestLocalModeMatchesTheOracle(t *testing.T) {
	dir := t.TempDir()
	lines, updates, bad := stream(6000, 400)
	input := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(input, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	output, dead := filepath.Join(dir, "out.jsonl"), filepath.Join(dir, "dead.jsonl")
	var stderr bytes.Buffer
	code := local.Main(context.Background(), []string{"--input", input, "--output", output, "--dead-letter", dead, "--partitions", "3", "--batch-size", "100", "--replicas", "2"},
		nil, nil, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	final, changes := oracle(updates)
	emitted := readLines[doc](t, output)
	if len(emitted) != changes {
		t.Errorf("emitted %d states, want one per changing update (%d)", len(emitted), changes)
	}
	last := map[string]doc{}
	for _, d := range emitted {
		if p, ok := last[d.URL]; ok && (d.FetchTime < p.FetchTime || d.FirstFetchTime > p.FirstFetchTime) {
			t.Fatalf("%s went backwards: %+v after %+v", d.URL, d, p)
		}
		last[d.URL] = d
	}
	if len(last) != len(final) {
		t.Fatalf("emitted %d urls, want %d", len(last), len(final))
	}
	for u, want := range final {
		if last[u] != want {
			t.Fatalf("last state of %s: %+v, want %+v", u, last[u], want)
		}
	}
	type deadLetter struct{ Reason, Line string }
	if got := readLines[deadLetter](t, dead); len(got) != bad || got[0].Reason == "" {
		t.Fatalf("dead letters %+v, want %d with reasons", got, bad)
	}
	summary := fmt.Sprintf("read %d, emitted %d, unchanged %d, dead-lettered %d", len(updates)+bad, changes, len(updates)-changes, bad)
	if !strings.Contains(stderr.String(), summary) {
		t.Fatalf("summary missing %q in:\n%s", summary, stderr.String())
	}
}

// TestLocalModeProcessesRealisticDocuments feeds web-like documents (texts
// of kilobytes up to the topic's limit, every script, long urls) and one
// line larger than the input topic takes: every state comes out, the line
// is dead-lettered with the reason, and the run exits 0.
func TestLocalModeProcessesRealisticDocuments(t *testing.T) {
	gen, err := docgen.New(docgen.Options{Seed: 11, TotalBytes: 30 << 20, BadLineRate: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	var input bytes.Buffer
	var updates []doc
	var bad int
	for l := range gen.Lines() {
		input.Write(l.JSON)
		input.WriteByte('\n')
		if l.Bad != "" {
			bad++
			continue
		}
		u := l.Update
		updates = append(updates, doc{URL: u.URL, PubDate: u.PubDate, FetchTime: u.FetchTime, Text: u.Text})
	}
	huge := fmt.Sprintf(`{"url":"https://huge.example/","pubDate":1,"fetchTime":2,"text":%q}`, strings.Repeat("x", 1100000))
	input.WriteString(huge + "\n")
	dir := t.TempDir()
	output, dead := filepath.Join(dir, "out.jsonl"), filepath.Join(dir, "dead.jsonl")
	var stderr bytes.Buffer
	code := local.Main(context.Background(), []string{"--input", "-", "--output", output, "--dead-letter", dead, "--partitions", "2"},
		&input, nil, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	final, changes := oracle(updates)
	last := map[string]doc{}
	emitted := readLines[doc](t, output)
	for _, d := range emitted {
		last[d.URL] = d
	}
	if len(emitted) != changes || len(last) != len(final) {
		t.Fatalf("emitted %d states of %d urls, want %d of %d", len(emitted), len(last), changes, len(final))
	}
	for u, want := range final {
		if last[u] != want {
			t.Fatalf("last state of %s differs from the oracle's", u)
		}
	}
	type deadLetter struct{ Reason, Line string }
	got := readLines[deadLetter](t, dead)
	if len(got) != bad+1 {
		t.Fatalf("%d dead letters, want the %d bad lines and the huge one", len(got), bad)
	}
	var tooLarge []deadLetter
	for _, d := range got {
		if strings.Contains(d.Reason, "too large") {
			tooLarge = append(tooLarge, d)
		}
	}
	if len(tooLarge) != 1 || tooLarge[0].Line != huge || !strings.Contains(tooLarge[0].Reason, "max.message.bytes") {
		t.Fatalf("dead letters for size: %d, want the huge line, whole, with the topic's limit in the reason", len(tooLarge))
	}
	if summary := fmt.Sprintf("emitted %d, unchanged %d, dead-lettered %d", changes, len(updates)-changes, bad+1); !strings.Contains(stderr.String(), summary) {
		t.Fatalf("summary missing %q in:\n%s", summary, stderr.String())
	}
}

func TestBadFlagsExitTwo(t *testing.T) {
	for _, args := range [][]string{{"--partitions", "0"}, {"--replicas", "10"}, {"extra"}, {"--nope"}} {
		var stderr bytes.Buffer
		if code := local.Main(context.Background(), args, nil, nil, &stderr); code != 2 || stderr.Len() == 0 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", args, code, stderr.String())
		}
	}
}

// TestKcatRoundTrip feeds local mode through its --listen port with kcat,
// an independent Kafka client, and reads the states back with it.
func TestKcatRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs kcat")
	}
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat not found: run `make test` (it installs kcat) or apt-get install kcat")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- local.Main(ctx, []string{"--listen", addr, "--partitions", "2"}, nil, nil, &stderr)
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("local mode exited %d: %s", code, stderr.String())
		}
	}()
	input := ("https://a.example/\t{\"url\":\"https://a.example/\",\"pubDate\":5,\"fetchTime\":20,\"text\":\"new\"}\n" +
		"https://a.example/\t{\"url\":\"https://a.example/\",\"pubDate\":1,\"fetchTime\":10,\"text\":\"old\"}\n" +
		"https://b.example/\t{\"url\":\"https://b.example/\",\"pubDate\":\"18446744073709551615\",\"fetchTime\":1,\"text\":\"b\"}\n")
	deadline := time.Now().Add(30 * time.Second)
	for { // until the embedded broker listens
		produce := exec.Command(kcat, "-b", addr, "-P", "-t", local.InputTopic, "-K", "\t")
		produce.Stdin = strings.NewReader(input)
		out, err := produce.CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kcat produce: %v: %s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	consume := exec.Command(kcat, "-b", addr, "-C", "-t", local.OutputTopic, "-o", "beginning", "-c", "3", "-e", "-X", "isolation.level=read_committed")
	var got []string
	for time.Now().Before(deadline) {
		out, _ := consume.Output()
		sc := bufio.NewScanner(bytes.NewReader(out))
		got = got[:0]
		for sc.Scan() {
			got = append(got, sc.Text())
		}
		if len(got) == 3 {
			break
		}
		time.Sleep(200 * time.Millisecond)
		consume = exec.Command(kcat, consume.Args[1:]...)
	}
	// a.example's states in emission order (one partition); b.example's
	// may come before, between or after them.
	wantA := []string{
		`{"url":"https://a.example/","pubDate":5,"fetchTime":20,"text":"new","firstFetchTime":20}`,
		`{"url":"https://a.example/","pubDate":1,"fetchTime":20,"text":"new","firstFetchTime":10}`,
	}
	wantB := `{"url":"https://b.example/","pubDate":18446744073709551615,"fetchTime":1,"text":"b","firstFetchTime":1}`
	var gotA, gotB []string
	for _, g := range got {
		if strings.Contains(g, "a.example") {
			gotA = append(gotA, g)
		} else {
			gotB = append(gotB, g)
		}
	}
	if !slices.Equal(gotA, wantA) || len(gotB) != 1 || gotB[0] != wantB {
		t.Fatalf("kcat read %q, want %q in this order and %q", got, wantA, wantB)
	}
}
