package docgen_test

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/internal/docgen"
)

// lines returns every line of the stream of opts.
func lines(t *testing.T, opts docgen.Options) []docgen.Line {
	t.Helper()
	g, err := docgen.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Collect(g.Lines())
}

// bigStream is 30 MB of the defaults, as `make sample-realistic` writes it,
// made once for the tests that need a tail of large texts.
var bigStream = sync.OnceValues(func() ([]docgen.Line, error) {
	g, err := docgen.New(docgen.Options{Seed: 1, TotalBytes: 30_000_000})
	if err != nil {
		return nil, err
	}
	return slices.Collect(g.Lines()), nil
})

func mustBigStream(t *testing.T) []docgen.Line {
	t.Helper()
	ls, err := bigStream()
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// textsOf returns the texts of the good lines.
func textsOf(ls []docgen.Line) []string {
	var texts []string
	for _, l := range ls {
		if l.Bad == "" {
			texts = append(texts, l.Update.Text)
		}
	}
	return texts
}

func TestSameOptionsGiveTheSameBytes(t *testing.T) {
	for _, c := range []struct {
		name string
		opts docgen.Options
	}{
		{"The defaults", docgen.Options{URLs: 30}},
		{"A byte budget with bad lines", docgen.Options{Seed: 7, TotalBytes: 1 << 20, BadLineRate: 0.05}},
		{"Local disorder without duplicates", docgen.Options{Seed: 3, URLs: 100, ShuffleWindow: 10, DuplicateRate: -1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			write := func(opts docgen.Options) []byte {
				g, err := docgen.New(opts)
				if err != nil {
					t.Fatal(err)
				}
				var b bytes.Buffer
				if _, err := g.WriteJSONL(&b); err != nil {
					t.Fatal(err)
				}
				return b.Bytes()
			}
			first := write(c.opts)
			if !bytes.Equal(first, write(c.opts)) {
				t.Fatal("two runs differ")
			}
			other := c.opts
			other.Seed++
			if bytes.Equal(first, write(other)) {
				t.Fatal("another seed gives the same stream")
			}
		})
	}
}

func TestGoodLinesDecodeToTheirUpdateAndBadOnesAreRefused(t *testing.T) {
	c, err := codec.New("json")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for i, l := range lines(t, docgen.Options{Seed: 2, URLs: 200, MedianTextBytes: 2048, BadLineRate: 0.02}) {
		if !utf8.Valid(l.JSON) || bytes.ContainsAny(l.JSON, "\x00\n\r") {
			t.Fatalf("line %d is not one line of UTF-8 without NUL: %.200q", i, l.JSON)
		}
		d, err := c.Decode(l.JSON)
		if l.Bad != "" {
			kinds[l.Bad]++
			if !errors.Is(err, codec.ErrBadInput) {
				t.Errorf("line %d, %s: decoded to %+v (err %v)", i, l.Bad, d, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("line %d: %v: %.300s", i, err, l.JSON)
		}
		if d != l.Update {
			t.Fatalf("line %d decodes to %+v, want %+v", i, d, l.Update)
		}
		if l.Update.URL == "" || strings.IndexByte(l.Update.Text, 0) >= 0 || !utf8.ValidString(l.Update.Text) {
			t.Fatalf("line %d: update %.200q is not storable", i, l.Update.Text)
		}
	}
	if len(kinds) != 6 {
		t.Errorf("got bad lines %v, want all six kinds", kinds)
	}
}

func TestLinesFitTheTopicsLimit(t *testing.T) {
	c, err := codec.New("json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		lines func(t *testing.T) []docgen.Line
		limit int
		// cut: every text is too long for the limit, so every line must
		// come close to it.
		cut bool
	}{
		{"Thirty megabytes of the defaults stay under 1 MiB", mustBigStream, docgen.DefaultMaxMessageBytes, false},
		{"Texts far larger than a 64 KiB limit are cut just under it", func(t *testing.T) []docgen.Line {
			return lines(t, docgen.Options{URLs: 20, MaxVersions: 2, MedianTextBytes: 4 << 20, MaxMessageBytes: 64 << 10})
		}, 64 << 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			longest := 0
			for i, l := range tc.lines(t) {
				if l.Bad != "" {
					continue
				}
				// The line as a message keyed by its url, and the state
				// docexec publishes for it, which is longer.
				msg := len(l.JSON) + len(l.Update.URL)
				state := len(c.Encode(document.StateOf(l.Update))) + len(l.Update.URL)
				if state >= tc.limit {
					t.Fatalf("line %d: message of %d bytes, state of %d: over the limit %d", i, msg, state, tc.limit)
				}
				if tc.cut && msg < tc.limit-1024 {
					t.Errorf("line %d: message of %d bytes, not cut close to the limit %d", i, msg, tc.limit)
				}
				longest = max(longest, msg)
			}
			t.Logf("longest message: %d bytes", longest)
		})
	}
}

func TestTextSizesHaveTheMedianAndATail(t *testing.T) {
	// One version per url and no duplicates, so that every text is drawn
	// on its own; a small limit keeps the stream small and leaves the
	// median alone.
	texts := textsOf(lines(t, docgen.Options{Seed: 4, URLs: 1000, MaxVersions: 1, DuplicateRate: -1, MaxMessageBytes: 64 << 10}))
	sizes := make([]int, len(texts))
	for i, text := range texts {
		sizes[i] = len(text)
	}
	slices.Sort(sizes)
	if median := sizes[len(sizes)/2]; median < docgen.DefaultMedianTextBytes*4/5 || median > docgen.DefaultMedianTextBytes*5/4 {
		t.Errorf("median text: %d bytes, want about %d", median, docgen.DefaultMedianTextBytes)
	}

	var over100KB, longest int
	for _, text := range textsOf(mustBigStream(t)) {
		if len(text) > 100_000 {
			over100KB++
		}
		longest = max(longest, len(text))
	}
	if over100KB < 10 || longest < 512<<10 {
		t.Errorf("30 MB hold %d texts over 100 KB, the longest of %d bytes: want a tail towards 1 MiB", over100KB, longest)
	}
}

func TestURLsRangeFromShortLinksTo8KB(t *testing.T) {
	ls := lines(t, docgen.Options{Seed: 5, URLs: 3000, MaxVersions: 1, DuplicateRate: -1, MedianTextBytes: 16})
	var urls []string
	shortest, longest, near8KB := math.MaxInt, 0, 0
	for _, l := range ls {
		u := l.Update.URL
		urls = append(urls, u)
		shortest, longest = min(shortest, len(u)), max(longest, len(u))
		if len(u) > 7<<10 {
			near8KB++
		}
	}
	if distinct := len(slices.Compact(slices.Sorted(slices.Values(urls)))); distinct != 3000 {
		t.Errorf("got %d distinct urls, want 3000", distinct)
	}
	if shortest > 24 || longest > docgen.MaxURLBytes || longest < 7<<10 || near8KB < 10 {
		t.Errorf("urls of %d to %d bytes, %d over 7 KiB: want about 20 to %d, a few near the top", shortest, longest, near8KB, docgen.MaxURLBytes)
	}
	for _, want := range []struct {
		name string
		in   func(u string) bool
	}{
		{"A Unicode host", func(u string) bool { return strings.HasPrefix(u, "https://пример.рф/") }},
		{"A punycode host", func(u string) bool { return strings.Contains(u, ".xn--p1ai/") }},
		{"A raw Unicode path", func(u string) bool { return strings.Contains(u, "/東京") }},
		{"A percent-encoded path", func(u string) bool { return strings.Contains(u, "/%D0%9C") }},
		{"Tracking parameters", func(u string) bool { return strings.Contains(u, "utm_source=") }},
		{"A repeated parameter", func(u string) bool { return strings.Count(u, "tag=") > 1 }},
		{"A fragment", func(u string) bool { return strings.Contains(u, "#") }},
	} {
		if !slices.ContainsFunc(urls, want.in) {
			t.Errorf("%s: none of the urls", want.name)
		}
	}
}

func TestTextsHoldEveryScriptAndTroublesomeCharacter(t *testing.T) {
	ls := lines(t, docgen.Options{Seed: 6, URLs: 300, MaxVersions: 2, MedianTextBytes: 2048})
	all := strings.Join(textsOf(ls), "")
	is := func(table *unicode.RangeTable) func() bool {
		return func() bool { return strings.ContainsFunc(all, func(r rune) bool { return unicode.Is(table, r) }) }
	}
	has := func(s string) func() bool { return func() bool { return strings.Contains(all, s) } }
	for _, want := range []struct {
		name string
		in   func() bool
	}{
		{"Latin with precomposed accents", has("é")},
		{"A combining acute accent", has("e\u0301")},
		{"Stacked diacritics", has("a\u0300\u0301\u0302")},
		{"Chinese", is(unicode.Han)},
		{"Hiragana", is(unicode.Hiragana)},
		{"Katakana", is(unicode.Katakana)},
		{"Korean", is(unicode.Hangul)},
		{"Cyrillic", is(unicode.Cyrillic)},
		{"Greek", is(unicode.Greek)},
		{"Arabic", is(unicode.Arabic)},
		{"Hebrew", is(unicode.Hebrew)},
		{"Devanagari", is(unicode.Devanagari)},
		{"Thai", is(unicode.Thai)},
		{"An emoji ZWJ sequence", has("👨‍👩‍👧‍👦")},
		{"A skin tone", has("👍🏽")},
		{"A flag", has("🇫🇷")},
		{"A line separator", has("\u2028")},
		{"A paragraph separator", has("\u2029")},
		{"A BOM", has("\ufeff")},
		{"Straight and typographic quotes", func() bool { return has(`"`)() && has("'")() && has("«")() && has("“")() }},
		{"A backslash", has(`\`)},
		{"A tab and a newline", func() bool { return has("\t")() && has("\n")() }},
		{"An HTML paragraph with a class", has(`<p class="x">`)},
		{"An entity", has("&amp;")},
		{"A script element", has("<script>")},
		{"A word of 300 bytes", has(strings.Repeat("ha", 150))},
	} {
		if !want.in() {
			t.Errorf("%s: in none of the texts", want.name)
		}
	}
	var raw bytes.Buffer
	for _, l := range ls {
		raw.Write(l.JSON)
	}
	for _, s := range []string{"\u2028", "\u2029", "<", ">", "&"} {
		if !bytes.Contains(raw.Bytes(), []byte(s)) {
			t.Errorf("%+q never written raw", s)
		}
	}
}

func TestStreamsHoldDuplicatesAndDisorder(t *testing.T) {
	for _, c := range []struct {
		name string
		opts docgen.Options
		// what the stream must show
		duplicates, disorder bool
	}{
		{"The defaults duplicate and shuffle", docgen.Options{Seed: 8, URLs: 300, MedianTextBytes: 512}, true, true},
		{"A window of 200 shuffles locally", docgen.Options{Seed: 8, URLs: 300, MedianTextBytes: 512, ShuffleWindow: 200}, true, true},
		{"A window of 1 keeps crawl order", docgen.Options{Seed: 8, URLs: 300, MedianTextBytes: 512, ShuffleWindow: 1, DuplicateRate: -1}, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			seen := map[string]bool{}                  // lines
			versions := map[string]map[uint64]string{} // url → fetch time → text
			newest := map[string]uint64{}              // fetch time delivered last, by url
			duplicates, disorder := 0, 0
			ls := lines(t, c.opts)
			for _, l := range ls {
				if seen[string(l.JSON)] {
					duplicates++
					continue
				}
				seen[string(l.JSON)] = true
				u := l.Update
				if versions[u.URL] == nil {
					versions[u.URL] = map[uint64]string{}
				}
				if _, again := versions[u.URL][u.FetchTime]; again {
					t.Fatalf("%s: two different lines at fetch time %d", u.URL, u.FetchTime)
				}
				versions[u.URL][u.FetchTime] = u.Text
				if u.FetchTime < newest[u.URL] {
					disorder++
				}
				newest[u.URL] = max(newest[u.URL], u.FetchTime)
			}
			t.Logf("%d lines, %d duplicates, %d versions out of order", len(ls), duplicates, disorder)
			if (duplicates > 0) != c.duplicates || (disorder > 0) != c.disorder {
				t.Errorf("got %d duplicates and %d versions out of order", duplicates, disorder)
			}
			if c.duplicates && (duplicates < len(ls)/10 || duplicates > len(ls)*3/10) {
				t.Errorf("%d duplicates in %d lines, want about %v of the updates", duplicates, len(ls), docgen.DefaultDuplicateRate)
			}
			for url, byTime := range versions {
				texts := map[string]bool{}
				for _, text := range byTime {
					texts[text] = true
				}
				if len(byTime) > docgen.DefaultMaxVersions || len(texts) != len(byTime) {
					t.Errorf("%s: %d versions, %d distinct texts", url, len(byTime), len(texts))
				}
			}
		})
	}
}

func TestTotalBytesEndsTheStreamAtTheLineThatReachesIt(t *testing.T) {
	for _, total := range []int64{1, 100_000, 3_000_000} {
		g, err := docgen.New(docgen.Options{Seed: 9, TotalBytes: total, BadLineRate: 0.01})
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		st, err := g.WriteJSONL(&b)
		if err != nil {
			t.Fatal(err)
		}
		last := bytes.LastIndexByte(b.Bytes()[:b.Len()-1], '\n') + 1
		if st.Bytes != int64(b.Len()) || st.Bytes < total || int64(last) >= total {
			t.Errorf("budget %d: wrote %d bytes (stats say %d), %d before the last line", total, b.Len(), st.Bytes, last)
		}
	}
}

func TestFinalStatesTakeTheNewestTextAndTheFirstPubDate(t *testing.T) {
	g, err := docgen.New(docgen.Options{Seed: 10, URLs: 100, MedianTextBytes: 256})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]document.Document{}
	for u := range g.Updates() {
		w, found := want[u.URL]
		if !found || u.FetchTime > w.FetchTime {
			w.URL, w.FetchTime, w.Text = u.URL, u.FetchTime, u.Text
		}
		if !found || u.FetchTime < w.FirstFetchTime {
			w.FirstFetchTime, w.PubDate = u.FetchTime, u.PubDate
		}
		want[u.URL] = w
	}
	got := docgen.FinalStates(g.Updates())
	if len(got) != 100 {
		t.Errorf("got %d states, want 100", len(got))
	}
	for url, w := range want {
		if got[url] != w {
			t.Errorf("%s: got %+v, want %+v", url, got[url], w)
		}
	}
}

func TestLinesVaryTheirEncoding(t *testing.T) {
	var quoted, reordered int
	for _, l := range lines(t, docgen.Options{Seed: 11, URLs: 300, MedianTextBytes: 256}) {
		if bytes.Contains(l.JSON, []byte(`"fetchTime":"`)) || bytes.Contains(l.JSON, []byte(`"pubDate":"`)) {
			quoted++
		}
		if !bytes.HasPrefix(l.JSON, []byte(`{"url":`)) {
			reordered++
		}
	}
	if quoted == 0 || reordered == 0 {
		t.Errorf("%d lines with integers as strings, %d with other key orders: want some of each", quoted, reordered)
	}
}

func TestBadOptionsAreRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		opts docgen.Options
	}{
		{"Negative urls", docgen.Options{URLs: -1}},
		{"A negative byte budget", docgen.Options{TotalBytes: -1}},
		{"A duplicate rate above 1", docgen.Options{DuplicateRate: 1.5}},
		{"A duplicate rate that is not a number", docgen.Options{DuplicateRate: math.NaN()}},
		{"A bad line rate of 1", docgen.Options{BadLineRate: 1}},
		{"A negative shuffle window", docgen.Options{ShuffleWindow: -1}},
		{"A message limit too small for an 8 KB url", docgen.Options{MaxMessageBytes: 16 << 10}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := docgen.New(c.opts); !errors.Is(err, docgen.ErrBadOptions) {
				t.Errorf("got %v, want ErrBadOptions", err)
			}
		})
	}
}
