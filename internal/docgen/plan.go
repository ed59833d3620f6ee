package docgen

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/document"
)

// Streams of the PCG generator seeded with Options.Seed, one per use, so
// that drawing more for one use never shifts what another draws.
const (
	planStream = iota + 1
	badLineStream
)

// Times are in milliseconds, as most crawlers keep them.
const (
	minute     = 60_000
	hour       = 60 * minute
	day        = 24 * hour
	crawlStart = 1_790_000_000_000 // autumn 2026
)

// textSizeSigma spreads text sizes: with the default median of 6 KiB, 1 MiB
// is three sigmas out (one text in 800), 100 KB one in twenty.
const textSizeSigma = 1.7

// minTextBytes is the size of the shortest texts: shorter ones would be
// little but the markup they start with (up to 130 bytes), and two versions
// could share one.
const minTextBytes = 256

// recordOverhead is what Kafka adds to a message's key and value: the
// record's framing (about 30 bytes) and the header of its batch (61), with
// room for a few headers.
const recordOverhead = 512

// stateSkeleton is the JSON of a state with empty strings and the widest
// numbers: what a line, or the state docexec publishes for it, adds to its
// url and text.
const stateSkeleton = `{"url":"","pubDate":"18446744073709551615","fetchTime":"18446744073709551615","text":"","firstFetchTime":18446744073709551615}`

// lineSkeleton is the JSON of the shortest line: what every line adds to its
// url and text at the least, its newline included.
const lineSkeleton = `{"url":"","pubDate":0,"fetchTime":0,"text":""}` + "\n"

// A page is a url and what its versions share.
type page struct {
	url    string
	script *script // the main one of its text
	html   bool    // the crawler kept the markup
}

// A planned update is all of a delivery but its text, which is made from
// seed when it is delivered.
type planned struct {
	page               *page
	pubDate, fetchTime uint64
	textBytes          int
	seed               uint64 // of the text and encoding: a duplicate shares it, so it is an exact copy
	deliveredAt        uint64 // fetchTime, later for a duplicate; the crawl order
}

// plan draws the pages, their versions and duplicates, then the delivery
// order.
func plan(o Options) []planned {
	r := rand.New(rand.NewPCG(o.Seed, planStream))
	seen := map[string]bool{}
	var out []planned
	// estimate is a lower bound of the bytes of the lines planned (a text
	// ends up to 3 bytes short of textBytes; escapes only add), but for the
	// rare text cut to make room for its escapes. The extra 1/64 makes sure
	// the lines reach TotalBytes, at the price of a few updates never
	// delivered.
	var estimate int64
	for n := 0; o.URLs == 0 || n < o.URLs; n++ {
		if o.TotalBytes > 0 && estimate >= o.TotalBytes+o.TotalBytes/64 {
			break
		}
		p := &page{url: newURL(r), script: scripts[r.IntN(len(scripts))], html: r.IntN(5) == 0}
		for seen[p.url] {
			p.url = newURL(r)
		}
		seen[p.url] = true
		size := float64(o.MedianTextBytes) * math.Exp(textSizeSigma*r.NormFloat64())
		pubDate := crawlStart - r.Uint64N(30*day)
		if r.IntN(50) == 0 {
			pubDate = 0 // the page shows no date
		}
		fetchTime := crawlStart + r.Uint64N(30*day)
		for v := range 1 + r.IntN(o.MaxVersions) {
			u := planned{page: p, pubDate: pubDate, fetchTime: fetchTime, seed: r.Uint64(), deliveredAt: fetchTime}
			if v > 0 && pubDate != 0 {
				u.pubDate = pubDate - hour + r.Uint64N(2*hour) // edited, or parsed another way
			}
			// Versions of a page differ a little in size too.
			u.textBytes = min(max(int(size*(0.9+0.2*r.Float64())), minTextBytes), o.textRoom(p.url))
			lineBytes := int64(len(p.url)+u.textBytes+len(lineSkeleton)) - 3
			out = append(out, u)
			estimate += lineBytes
			if r.Float64() < o.DuplicateRate {
				u.deliveredAt += 1000 + r.Uint64N(6*hour)
				out = append(out, u)
				estimate += lineBytes
			}
			fetchTime += 10*minute + r.Uint64N(3*day)
		}
	}
	slices.SortStableFunc(out, func(a, b planned) int { return cmp.Compare(a.deliveredAt, b.deliveredAt) })
	// Fisher-Yates with draws limited to the window: a full shuffle when
	// the window is the whole stream.
	for i := range out {
		j := i + r.IntN(min(o.ShuffleWindow, len(out)-i))
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// textRoom is how long the text of a version of url may be, escaped as
// docexec writes it, for the line and the state to fit MaxMessageBytes.
func (o Options) textRoom(url string) int {
	return o.MaxMessageBytes - recordOverhead - 2*len(url) - len(stateSkeleton)
}

// line makes the line of u.
func (g *Generator) line(u *planned) Line {
	r := rand.New(rand.NewPCG(u.seed, 0))
	e := drawEncoding(r)
	// Room for the paragraph that crosses textBytes, so that the buffer
	// rarely grows.
	text := string(appendText(make([]byte, 0, u.textBytes+4<<10), r, u.page.script, u.page.html, u.textBytes))
	// A text cut to fit has no room for the escapes it holds: cut them off
	// too (each byte less is at least a byte less escaped).
	if over := codec.JSONStringLen(text) - g.opts.textRoom(u.page.url); over > 0 {
		text = text[:runeStart(text, len(text)-over)]
	}
	d := document.Document{URL: u.page.url, PubDate: u.pubDate, FetchTime: u.fetchTime, Text: text}
	return Line{JSON: appendLine(make([]byte, 0, len(d.URL)+len(text)+len(text)/32+len(stateSkeleton)), d, e), Update: d}
}
