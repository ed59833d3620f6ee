package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/document/documenttest"
	"github.com/docexec/docexec/executor/fencing"
	"github.com/docexec/docexec/internal/redact/redacttest"
	"github.com/docexec/docexec/internal/testenv"
)

var ctx = context.Background()

func save(t testing.TB, s *Store, states []document.Document, mark *Watermark) {
	t.Helper()
	if err := s.Save(ctx, states, mark); err != nil {
		t.Fatal(err)
	}
}

func load(t testing.TB, s *Store, urls ...string) map[string]document.Document {
	t.Helper()
	got, err := s.Load(ctx, urls)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// reset empties the documents and watermark tables.
func reset(t testing.TB, s *Store) {
	t.Helper()
	for _, table := range []string{s.table, partitionsTable} {
		if err := s.db.Exec(`DELETE FROM "` + table + `"`).Error; err != nil {
			t.Fatal(err)
		}
	}
}

// fold is the Go reference: every url's states joined with document.Merge.
func fold(states []document.Document) map[string]document.Document {
	out := map[string]document.Document{}
	for _, d := range states {
		if prev, ok := out[d.URL]; ok {
			d = document.Merge(prev, d)
		}
		out[d.URL] = d
	}
	return out
}

func urlsOf(m map[string]document.Document) []string {
	urls := make([]string, 0, len(m))
	for u := range m {
		urls = append(urls, u)
	}
	sort.Strings(urls)
	return urls
}

// TestMergeCases runs the shared reference cases through the SQL upsert, one
// update per Save, checking the stored state after every step.
func TestMergeCases(t *testing.T) {
	eachDB(t, Options{}, func(t *testing.T, s *Store) {
		for _, c := range documenttest.MergeCases() {
			t.Run(c.Name, func(t *testing.T) {
				reset(t, s)
				for i, u := range c.Updates {
					save(t, s, []document.Document{document.StateOf(u)}, nil)
					got := load(t, s, u.URL)
					if want := c.StateAfter(i); got[u.URL] != want {
						t.Fatalf("after update %d (%+v):\n got  %+v\n want %+v", i, u, got[u.URL], want)
					}
				}
				want := map[string]document.Document{}
				for _, d := range c.Final {
					want[d.URL] = d
				}
				if got := load(t, s, urlsOf(want)...); !reflect.DeepEqual(got, want) {
					t.Fatalf("final:\n got  %+v\n want %+v", got, want)
				}
			})
		}
	})
}

// edgeUint64s are the values a double or a signed integer gets wrong.
var edgeUint64s = []uint64{
	0, 1, 2, 1<<53 - 1, 1 << 53, 1<<53 + 1, math.MaxInt64 - 1, math.MaxInt64,
	1 << 63, 1<<63 + 1, math.MaxUint64 - 1, math.MaxUint64,
}

func genUint64() *rapid.Generator[uint64] {
	return rapid.OneOf(
		rapid.SampledFrom(edgeUint64s),
		rapid.Uint64Range(0, 4), // ties
		rapid.Uint64(),
	)
}

// genText draws texts whose byte order differs from a locale's order
// ("Z" < "a" < "z" < "é" bytewise) and that share prefixes.
func genText() *rapid.Generator[string] {
	return rapid.SampledFrom([]string{"", "a", "ab", "b", "Z", "z", "é", "e\u0301", "日本", "A long text"})
}

func genState(urls []string) *rapid.Generator[document.Document] {
	return rapid.Custom(func(t *rapid.T) document.Document {
		url := rapid.SampledFrom(urls).Draw(t, "url")
		// A state is the merge of one or more updates.
		n := rapid.IntRange(1, 3).Draw(t, "versions")
		var st document.Document
		for i := range n {
			u := document.StateOf(document.Document{
				URL:       url,
				PubDate:   genUint64().Draw(t, "pubDate"),
				FetchTime: genUint64().Draw(t, "fetchTime"),
				Text:      genText().Draw(t, "text"),
			})
			if i == 0 {
				st = u
			} else {
				st = document.Merge(st, u)
			}
		}
		return st
	})
}

// TestSaveIsTheMergeFold: random states, repeated and shuffled, saved in
// random batches, leave exactly the Go fold of document.Merge in the table.
func TestSaveIsTheMergeFold(t *testing.T) {
	urls := []string{"https://a.example/", "https://b.example/", "https://c.example/x?y=1", "https://d.example/é"}
	// BatchSize 3: one Save spans several INSERT statements.
	eachDB(t, Options{BatchSize: 3}, func(t *testing.T, s *Store) {
		rapid.Check(t, func(rt *rapid.T) {
			reset(t, s)
			states := rapid.SliceOfN(genState(urls), 1, 30).Draw(rt, "states")
			want := fold(states)

			// Duplicate some, shuffle, split into batches.
			all := append([]document.Document(nil), states...)
			for _, i := range rapid.SliceOfN(rapid.IntRange(0, len(states)-1), 0, 10).Draw(rt, "dups") {
				all = append(all, states[i])
			}
			perm := rapid.Permutation(all).Draw(rt, "order")
			for len(perm) > 0 {
				n := rapid.IntRange(1, len(perm)).Draw(rt, "batch")
				if err := s.Save(ctx, perm[:n], nil); err != nil {
					rt.Fatal(err)
				}
				perm = perm[n:]
			}
			got, err := s.Load(ctx, urls)
			if err != nil {
				rt.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				rt.Fatalf("stored rows differ from the merge fold:\n got  %+v\n want %+v", got, want)
			}
		})
	})
}

func TestSaveDuplicateURLsInOneCall(t *testing.T) {
	eachDB(t, Options{}, func(t *testing.T, s *Store) {
		const u = "https://dup.example/"
		states := []document.Document{
			document.StateOf(document.Document{URL: u, PubDate: 5, FetchTime: 20, Text: "middle"}),
			document.StateOf(document.Document{URL: u, PubDate: 9, FetchTime: 30, Text: "newest"}),
			document.StateOf(document.Document{URL: u, PubDate: 1, FetchTime: 10, Text: "oldest"}),
			document.StateOf(document.Document{URL: u, PubDate: 9, FetchTime: 30, Text: "newest"}),
			document.StateOf(document.Document{URL: "https://other.example/", PubDate: 1, FetchTime: 1, Text: "x"}),
		}
		save(t, s, states, nil)
		want := document.Document{URL: u, PubDate: 1, FetchTime: 30, Text: "newest", FirstFetchTime: 10}
		if got := load(t, s, u)[u]; got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
}

func TestLateSaveNeverMovesBackwards(t *testing.T) {
	eachDB(t, Options{}, func(t *testing.T, s *Store) {
		const u = "https://late.example/"
		newest := document.Document{URL: u, PubDate: 100, FetchTime: 200, Text: "new", FirstFetchTime: 100}
		save(t, s, []document.Document{newest}, nil)

		// A late state with a lower fetch time: the text stays; only the
		// older side (first fetch, pub date) may move, and only back in time.
		late := document.StateOf(document.Document{URL: u, PubDate: 50, FetchTime: 150, Text: "zzz old but greater text"})
		save(t, s, []document.Document{late}, nil)
		if got := load(t, s, u)[u]; got != newest {
			t.Fatalf("a state between first and last changed the row: %+v", got)
		}
		earliest := document.StateOf(document.Document{URL: u, PubDate: 7, FetchTime: 90, Text: "zzz first"})
		save(t, s, []document.Document{earliest}, nil)
		want := document.Document{URL: u, PubDate: 7, FetchTime: 200, Text: "new", FirstFetchTime: 90}
		if got := load(t, s, u)[u]; got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
		// Replays of everything change nothing.
		save(t, s, []document.Document{late, newest, earliest, newest}, nil)
		if got := load(t, s, u)[u]; got != want {
			t.Fatalf("replay moved the row: got %+v, want %+v", got, want)
		}
	})
}

func TestWatermark(t *testing.T) {
	eachDB(t, Options{}, func(t *testing.T, s *Store) {
		if _, found, err := s.Watermark(ctx, "pool", 7); err != nil || found {
			t.Fatalf("before any Save: found=%v err=%v", found, err)
		}
		mark := Watermark{Pool: "pool", Partition: 7, Offset: 100, Epoch: 5}
		save(t, s, nil, &mark)
		checkMark(t, s, mark)

		// A lower epoch is fenced, and the states of the same Save are not kept.
		doc := document.StateOf(document.Document{URL: "https://fenced.example/", FetchTime: 1, Text: "stale"})
		stale := Watermark{Pool: "pool", Partition: 7, Offset: 900, Epoch: 4}
		err := s.Save(ctx, []document.Document{doc}, &stale)
		if !errors.Is(err, fencing.ErrFenced) {
			t.Fatalf("Save with a lower epoch: err = %v, want ErrFenced", err)
		}
		if got := load(t, s, doc.URL); len(got) != 0 {
			t.Fatalf("a fenced Save kept states: %+v", got)
		}
		checkMark(t, s, mark)

		// Equal and higher epochs are accepted, with their states.
		for _, m := range []Watermark{
			{Pool: "pool", Partition: 7, Offset: 150, Epoch: 5},
			{Pool: "pool", Partition: 7, Offset: 160, Epoch: 6},
		} {
			save(t, s, []document.Document{doc}, &m)
			checkMark(t, s, m)
			if got := load(t, s, doc.URL); got[doc.URL] != doc {
				t.Fatalf("states of an accepted Save: %+v", got)
			}
		}

		// Other partitions and pools are independent.
		if _, found, _ := s.Watermark(ctx, "pool", 8); found {
			t.Fatal("partition 8 has a watermark")
		}
		other := Watermark{Pool: "other", Partition: 7, Offset: 1, Epoch: 0}
		save(t, s, nil, &other)
		checkMark(t, s, other)

		// Epochs compare as unsigned: 2^63 beats 2^63-1, and max round-trips.
		high := Watermark{Pool: "edge", Partition: math.MaxInt32, Offset: math.MaxInt64, Epoch: 1 << 63}
		save(t, s, nil, &high)
		if err := s.Save(ctx, nil, &Watermark{Pool: "edge", Partition: math.MaxInt32, Epoch: 1<<63 - 1}); !errors.Is(err, fencing.ErrFenced) {
			t.Fatalf("epoch 2^63-1 after 2^63: err = %v, want ErrFenced", err)
		}
		// A claim records its epoch without an offset: the offset stays.
		top := Watermark{Pool: "edge", Partition: math.MaxInt32, Offset: NoOffset, Epoch: math.MaxUint64}
		save(t, s, nil, &top)
		checkMark(t, s, Watermark{Pool: "edge", Partition: math.MaxInt32, Offset: math.MaxInt64, Epoch: math.MaxUint64})
		// A lower offset never moves it backwards either.
		save(t, s, nil, &Watermark{Pool: "pool", Partition: 7, Offset: 3, Epoch: 6})
		checkMark(t, s, Watermark{Pool: "pool", Partition: 7, Offset: 160, Epoch: 6})
	})
}

func TestEmptyTellsWhetherAnyStateIsStored(t *testing.T) {
	eachDB(t, Options{}, func(t *testing.T, s *Store) {
		if empty, err := s.Empty(ctx); err != nil || !empty {
			t.Fatalf("new table: empty=%v, %v", empty, err)
		}
		save(t, s, nil, &Watermark{Pool: "p", Offset: 5})
		if empty, err := s.Empty(ctx); err != nil || !empty {
			t.Fatalf("after a watermark alone: empty=%v, %v", empty, err)
		}
		save(t, s, []document.Document{document.StateOf(document.Document{URL: "u"})}, nil)
		if empty, err := s.Empty(ctx); err != nil || empty {
			t.Fatalf("after a state: empty=%v, %v", empty, err)
		}
	})
}

func checkMark(t *testing.T, s *Store, want Watermark) {
	t.Helper()
	got, found, err := s.Watermark(ctx, want.Pool, want.Partition)
	if err != nil || !found || got != want {
		t.Fatalf("watermark: got %+v found=%v err=%v, want %+v", got, found, err, want)
	}
}

func TestMigrateTwice(t *testing.T) {
	eachDB(t, Options{}, func(t *testing.T, s *Store) {
		d := document.StateOf(document.Document{URL: "https://keep.example/", FetchTime: 3})
		save(t, s, []document.Document{d}, nil)
		for range 2 {
			if err := s.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if got := load(t, s, d.URL); got[d.URL] != d {
			t.Fatalf("Migrate lost data: %+v", got)
		}
	})
}

func TestMigrateConcurrently(t *testing.T) {
	eachDB(t, Options{}, func(t *testing.T, s *Store) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() { errs <- s.Migrate(ctx) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestConcurrentSaves: writers saving overlapping urls in different orders
// at once neither deadlock nor lose a merge.
func TestConcurrentSaves(t *testing.T) {
	eachDB(t, Options{BatchSize: 7}, func(t *testing.T, s *Store) {
		var all []document.Document
		for i := range 200 {
			all = append(all, document.StateOf(document.Document{
				URL:       fmt.Sprintf("https://c.example/%d", i%40),
				PubDate:   uint64(i * 7 % 13),
				FetchTime: uint64(i),
				Text:      fmt.Sprint("v", i),
			}))
		}
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for w := range 4 {
			wg.Go(func() {
				mine := make([]document.Document, len(all))
				for i := range all {
					mine[i] = all[(i*(w+1)*37+w)%len(all)] // a different order each
				}
				for start := 0; start < len(mine); start += 25 {
					if err := s.Save(ctx, mine[start:start+25], nil); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		want := fold(all)
		if got := load(t, s, urlsOf(want)...); !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v\nwant %+v", got, want)
		}
	})
}

// TestChunking: Load and Save split work at the bind-parameter limit.
func TestChunking(t *testing.T) {
	eachDB(t, Options{BatchSize: 1 << 20}, func(t *testing.T, s *Store) {
		s.maxParams = 12 // 2 rows per INSERT, 12 urls per SELECT
		if got := s.rowsPerInsert(); got != 2 {
			t.Fatalf("rowsPerInsert = %d, want 2", got)
		}
		var states []document.Document
		var urls []string
		for i := range 31 {
			d := document.StateOf(document.Document{URL: fmt.Sprintf("https://chunk.example/%02d", i), FetchTime: uint64(i)})
			states = append(states, d)
			urls = append(urls, d.URL, d.URL)
		}
		urls = append(urls, "https://absent.example/")
		save(t, s, states, nil)
		got := load(t, s, urls...)
		if want := fold(states); !reflect.DeepEqual(got, want) {
			t.Fatalf("got %d rows, want %d: %+v", len(got), len(want), got)
		}
	})
}

// TestASaveOfManyRowsStaysWithinTheBindParameterLimit: a sync.batchSize
// above the driver's limit of bind parameters (65535 in PostgreSQL, 32766 in
// SQLite) is split by the parameters a row really takes, url_hash included.
func TestASaveOfManyRowsStaysWithinTheBindParameterLimit(t *testing.T) {
	eachDB(t, Options{BatchSize: 1 << 20}, func(t *testing.T, s *Store) {
		var states []document.Document
		for i := range 11_000 {
			states = append(states, document.StateOf(document.Document{URL: fmt.Sprintf("https://many.example/%d", i), FetchTime: 1}))
		}
		save(t, s, states, nil)
		if got := load(t, s, states[0].URL, states[len(states)-1].URL); len(got) != 2 {
			t.Fatalf("loaded %d of the first and last states, want both", len(got))
		}
	})
}

func TestLoadAndSaveNothing(t *testing.T) {
	eachDB(t, Options{}, func(t *testing.T, s *Store) {
		if got := load(t, s); len(got) != 0 {
			t.Fatalf("Load() = %+v", got)
		}
		save(t, s, nil, nil)
		if got := load(t, s, "https://none.example/"); len(got) != 0 {
			t.Fatalf("Load(absent) = %+v", got)
		}
	})
}

func TestTableOption(t *testing.T) {
	eachDB(t, Options{Table: "docs_a"}, func(t *testing.T, a *Store) {
		b, err := newStore(a.db, a.dialect, a.maxParams, Options{Table: "docs_b"})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		const u = "https://t.example/"
		save(t, a, []document.Document{{URL: u, FetchTime: 1, Text: "a", FirstFetchTime: 1}}, nil)
		if got := load(t, b, u); len(got) != 0 {
			t.Fatalf("table docs_b sees docs_a's row: %+v", got)
		}
		if got := load(t, a, u); got[u].Text != "a" {
			t.Fatalf("table docs_a: %+v", got)
		}
	})
	for _, bad := range []string{"Documents", "docs; DROP TABLE x", `a"b`, "1docs", partitionsTable, strings.Repeat("x", 55)} {
		if _, err := OpenSQLite(ctx, ":memory:", Options{Table: bad}); err == nil {
			t.Errorf("table name %q accepted", bad)
		}
	}
	if _, err := OpenSQLite(ctx, ":memory:", Options{BatchSize: -1}); err == nil {
		t.Error("negative batch size accepted")
	}
}

// TestSQLiteMemory: ":memory:" keeps one database across calls and goroutines.
func TestSQLiteMemory(t *testing.T) {
	s, err := OpenSQLite(ctx, ":memory:", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			d := document.StateOf(document.Document{URL: fmt.Sprint("https://m.example/", i), FetchTime: uint64(i)})
			if err := s.Save(ctx, []document.Document{d}, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var urls []string
	for i := range 8 {
		urls = append(urls, fmt.Sprint("https://m.example/", i))
	}
	if got := load(t, s, urls...); len(got) != 8 {
		t.Fatalf("got %d rows, want 8", len(got))
	}
}

func TestOpenSQLiteBadPath(t *testing.T) {
	for _, p := range []string{"", "a?b"} {
		if _, err := OpenSQLite(ctx, p, Options{}); err == nil {
			t.Errorf("path %q accepted", p)
		}
	}
}

// TestPostgresReadable: the readable views show real unsigned values, and the
// text columns compare bytewise whatever the server's locale.
func TestPostgresReadable(t *testing.T) {
	s := openPostgres(t, Options{})
	const u = "https://max.example/"
	save(t, s, []document.Document{{URL: u, PubDate: 0, FetchTime: math.MaxUint64, Text: "t", FirstFetchTime: 1 << 53}}, nil)
	save(t, s, nil, &Watermark{Pool: "p", Partition: 1, Offset: 2, Epoch: math.MaxUint64})

	var row struct {
		PubDate, FetchTime, FirstFetchTime, Type string
	}
	err := s.db.Raw(`SELECT pub_date::text AS pub_date, fetch_time::text AS fetch_time,
		first_fetch_time::text AS first_fetch_time, pg_typeof(fetch_time)::text AS type
		FROM documents_readable WHERE url = ?`, u).Scan(&row).Error
	if err != nil {
		t.Fatal(err)
	}
	want := struct{ PubDate, FetchTime, FirstFetchTime, Type string }{"0", "18446744073709551615", "9007199254740992", "numeric"}
	if row != want {
		t.Fatalf("documents_readable: got %+v, want %+v", row, want)
	}
	// What the table holds: the mapped bigint.
	var raw int64
	if err := s.db.Raw(`SELECT fetch_time FROM documents WHERE url = ?`, u).Scan(&raw).Error; err != nil {
		t.Fatal(err)
	}
	if raw != math.MaxInt64 {
		t.Fatalf("stored fetch_time = %d, want %d", raw, int64(math.MaxInt64))
	}
	var epoch string
	if err := s.db.Raw(`SELECT epoch::text FROM docexec_partitions_readable WHERE pool = 'p'`).Scan(&epoch).Error; err != nil {
		t.Fatal(err)
	}
	if epoch != "18446744073709551615" {
		t.Fatalf("docexec_partitions_readable epoch = %s", epoch)
	}

	var collations []string
	err = s.db.Raw(`SELECT column_name || '=' || coalesce(collation_name, '') FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = 'documents' AND column_name IN ('url', 'text')
		ORDER BY column_name`).Scan(&collations).Error
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"text=C", "url=C"}; !reflect.DeepEqual(collations, want) {
		t.Fatalf("collations %v, want %v", collations, want)
	}
}

func TestOrderedUint64(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		x := genUint64().Draw(t, "x")
		y := genUint64().Draw(t, "y")
		vx, _ := orderedUint64(x).Value()
		vy, _ := orderedUint64(y).Value()
		if (x < y) != (vx.(int64) < vy.(int64)) {
			t.Fatalf("order not kept: %d<%d is %v, mapped %d<%d", x, y, x < y, vx, vy)
		}
		var back orderedUint64
		if err := back.Scan(vx); err != nil || uint64(back) != x {
			t.Fatalf("round trip of %d: %d, %v", x, back, err)
		}
	})
	if err := new(orderedUint64).Scan("12"); err == nil {
		t.Fatal("scanned a string")
	}
}

func TestOpenPostgresNeverPrintsThePassword(t *testing.T) {
	// Nothing listens on port 1: every DSN fails to parse or to connect.
	for _, tc := range redacttest.DSNs("127.0.0.1:1") {
		t.Run(tc.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			st, err := OpenPostgres(ctx, tc.DSN, Options{})
			if err == nil {
				st.Close()
				t.Fatal("opened a server that does not exist")
			}
			if strings.Contains(err.Error(), redacttest.Marker) {
				t.Errorf("the error shows (part of) the password: %v", err)
			}
		})
	}
}

// longURL is a real kind of url: an 8 KB query string (tracking data, a
// search, a serialized state), more than PostgreSQL's btree index takes
// as a key (about 2,700 bytes).
func longURL(n int) string {
	u := "https://search.example/results?q=" + strings.Repeat("caf%C3%A9+%E6%97%A5%E6%9C%AC+", 300)
	for i := 0; len(u) < n; i++ {
		u += fmt.Sprintf("&utm_%d=%x", i, i*7919)
	}
	return u[:n]
}

func TestAnyURLUpToTheMessageSizeIsStored(t *testing.T) {
	eachDB(t, Options{}, func(t *testing.T, s *Store) {
		reset(t, s)
		var states []document.Document
		for _, n := range []int{2700, 8 << 10, 64 << 10} {
			u := longURL(n)
			states = append(states,
				document.Document{URL: u, PubDate: 1, FetchTime: 10, Text: "first", FirstFetchTime: 10},
				document.Document{URL: u + "#other", PubDate: 2, FetchTime: 20, Text: "a neighbour", FirstFetchTime: 20})
		}
		save(t, s, states, nil)
		// Merged into, not duplicated: the second write is newer.
		newer := states[0]
		newer.FetchTime, newer.Text = 30, "second"
		save(t, s, []document.Document{newer}, nil)
		want := fold(append(states, newer))
		if got := load(t, s, urlsOf(want)...); !reflect.DeepEqual(got, want) {
			t.Fatalf("loaded %d states, want %d, whole", len(got), len(want))
		}
	})
}

func TestMigrateKeysATableOfTheFirstLayoutByURLHash(t *testing.T) {
	dsn := testenv.Postgres(t)
	s, err := OpenPostgres(ctx, dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The first layout: keyed by the url itself.
	for _, stmt := range []string{
		`CREATE TABLE "documents" ("url" text COLLATE "C" NOT NULL PRIMARY KEY, "pub_date" bigint NOT NULL,
			"fetch_time" bigint NOT NULL, "text" text COLLATE "C" NOT NULL, "first_fetch_time" bigint NOT NULL)`,
		`INSERT INTO "documents" VALUES ('https://a.example/', -9223372036854775807, -9223372036854775798, 'kept', -9223372036854775798)`,
	} {
		if err := s.db.Exec(stmt).Error; err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // idempotent
		if err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := document.Document{URL: "https://a.example/", PubDate: 1, FetchTime: 10, Text: "kept", FirstFetchTime: 10}
	if got := load(t, s, want.URL); got[want.URL] != want {
		t.Fatalf("after migrating, loaded %+v, want %+v", got, want)
	}
	long := document.Document{URL: longURL(8 << 10), PubDate: 1, FetchTime: 2, Text: "t", FirstFetchTime: 2}
	save(t, s, []document.Document{want, long}, nil)
	if got := load(t, s, want.URL, long.URL); len(got) != 2 || got[long.URL] != long {
		t.Fatalf("after migrating, saved and loaded %+v", got)
	}
}

// TestWebPagesAreCompressedWithLZ4: PostgreSQL's default TOAST compression,
// pglz, costs the sync more than a fast one on web pages; Migrate turns the
// texts' column to lz4 where the server has it, also in a table made
// before.
func TestWebPagesAreCompressedWithLZ4(t *testing.T) {
	s := openPostgres(t, Options{})
	if lz4, err := hasLZ4(s.db); err != nil || !lz4 {
		t.Fatalf("the test server has no lz4 (%v): this test needs one that does", err)
	}
	if err := s.db.Exec(`ALTER TABLE "documents" ALTER COLUMN "text" SET COMPRESSION pglz`).Error; err != nil {
		t.Fatal(err) // as a table made before had it
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	page := document.Document{URL: "https://page.example/", FetchTime: 1, FirstFetchTime: 1, Text: strings.Repeat("<p>a web page, compressible</p>", 4000)}
	save(t, s, []document.Document{page}, nil)
	var method string
	if err := s.db.Raw(`SELECT pg_column_compression("text") FROM "documents" WHERE "url" = ?`, page.URL).Scan(&method).Error; err != nil || method != "lz4" {
		t.Fatalf("the page's text is compressed with %q (%v), want lz4", method, err)
	}
}
