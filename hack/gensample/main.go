// Command gensample writes examples/updates.jsonl, the sample input of the
// README: crawls of a few hundred pages arriving out of order and
// duplicated, with a few bad lines. It is deterministic.
//
//	go run ./hack/gensample > examples/updates.jsonl
//
// With -realistic it writes a stream of web-like updates instead (package
// internal/docgen): large multilingual texts, long urls, cut to fit the
// topic's message limit.
//
//	go run ./hack/gensample -realistic -bytes 30000000 -bad-lines > examples/realistic.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"

	"github.com/docexec/docexec/internal/docgen"
)

// badLineRate gives about ten bad lines in 30 MB, each kind twice.
const badLineRate = 0.01

type update struct {
	URL       string `json:"url"`
	PubDate   uint64 `json:"pubDate"`
	FetchTime uint64 `json:"fetchTime"`
	Text      string `json:"text"`
}

func main() {
	realistic := flag.Bool("realistic", false, "write a realistic stream instead of the small readable sample")
	opts := docgen.Options{}
	flag.Int64Var(&opts.TotalBytes, "bytes", 30_000_000, "with -realistic: stop once this many bytes are written")
	flag.Uint64Var(&opts.Seed, "seed", 1, "with -realistic: the seed (the same flags give the same bytes)")
	flag.IntVar(&opts.MaxMessageBytes, "max-message-bytes", docgen.DefaultMaxMessageBytes, "with -realistic: the topic's message limit, which every line fits")
	badLines := flag.Bool("bad-lines", false, "with -realistic: mix in a few lines that must be dead-lettered")
	flag.Parse()
	if !*realistic {
		writeSample()
		return
	}
	if *badLines {
		opts.BadLineRate = badLineRate
	}
	g, err := docgen.New(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	st, err := g.WriteJSONL(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "gensample: wrote %d lines (%d bad), %d bytes\n", st.Lines, st.BadLines, st.Bytes)
}

// writeSample writes examples/updates.jsonl.
func writeSample() {
	r := rand.New(rand.NewPCG(2026, 11))
	const start = 1_790_000_000 // seconds, autumn 2026
	var updates []update
	for page := range 400 {
		url := fmt.Sprintf("https://news%d.example/articles/%d", page%7, page)
		pub := uint64(start - r.IntN(86400*30))
		fetch := pub + uint64(r.IntN(3600))
		for v := range 1 + r.IntN(12) {
			updates = append(updates, update{url, pub + uint64(r.IntN(60)), fetch, fmt.Sprintf("article %d, revision %d", page, v+1)})
			fetch += uint64(600 + r.IntN(86400))
		}
	}
	// Duplicates, then the delivery order shuffled.
	for range len(updates) / 4 {
		updates = append(updates, updates[r.IntN(len(updates))])
	}
	r.Shuffle(len(updates), func(i, j int) { updates[i], updates[j] = updates[j], updates[i] })

	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	for i, u := range updates {
		if err := enc.Encode(u); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		switch i {
		case 100:
			fmt.Fprintln(w, `{"url": "https://news1.example/broken", "fetchTime": -5, "text": "negative time"}`)
		case 2000:
			fmt.Fprintln(w, `{"pubDate": 1, "fetchTime": 2, "text": "no url"}`)
		case 3000:
			fmt.Fprintln(w, `this line is not JSON`)
		}
	}
}
