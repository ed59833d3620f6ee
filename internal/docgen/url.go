package docgen

import (
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
)

// MaxURLBytes is the length of the longest urls: about what browsers, CDNs
// and crawlers accept before they refuse a url.
const MaxURLBytes = 8 << 10

// idnHosts are internationalised host names, each in Unicode and in the
// punycode (xn--) form that DNS uses; pages are found under both.
var idnHosts = [][2]string{
	{"bücher.example", "xn--bcher-kva.example"},
	{"пример.рф", "xn--e1afmkfd.xn--p1ai"},
	{"例え.jp", "xn--r8jz45g.jp"},
	{"münchen.de", "xn--mnchen-3ya.de"},
	{"新闻.中国", "xn--efvy88h.xn--fiqs8s"},
	{"한국어.kr", "xn--3e0bk47br7k.kr"},
	{"ελληνικά.gr", "xn--hxargifdar.gr"},
	{"मराठी.भारत", "xn--d2b1ag0dl.xn--h2brj9c"},
	{"עברית.il", "xn--5dbqzzl.il"},
	{"مثال.إختبار", "xn--mgbh0fb.xn--kgbechtv"},
	{"ไทย.th", "xn--o3cw4h.th"},
	{"café.fr", "xn--caf-dma.fr"},
}

var (
	subdomains = []string{"", "", "www.", "www.", "news.", "blog.", "m.", "en.", "shop."}
	hostNames  = strings.Fields(`daily-news techblog example wiki shop-online
		forum citypaper sportsdesk recipes travelguide weather-now dev-notes
		archive portal`)
	tlds       = strings.Fields(`com com com org net de fr co.uk ru jp cn io info example`)
	shortHosts = strings.Fields(`t.co bit.ly goo.gl youtu.be`)
	// pathWords name sections and make slugs; they are plain ASCII.
	pathWords = strings.Fields(`news world politics tech sport article story 2026
		archive category tag blog post page amp video live opinion culture
		science weather-report breaking update`)
	// unicodeWords appear in paths, raw or percent-encoded, and in search
	// queries.
	unicodeWords = strings.Fields(`Москва 東京 서울 Αθήνα القاهرة ירושלים दिल्ली
		กรุงเทพ São_Paulo Zürich café Ελλάδα 日本語`)
	utmSources = strings.Fields(`newsletter twitter facebook google partner rss`)
)

// newURL returns a url of one of the shapes crawlers meet: short links of
// about 20 bytes, ordinary article urls, urls with long tracking queries,
// and a few near MaxURLBytes.
func newURL(r *rand.Rand) string {
	var b strings.Builder
	b.WriteString("https://")
	if r.IntN(30) == 0 {
		b.WriteString(shortHosts[r.IntN(len(shortHosts))])
		b.WriteByte('/')
		b.WriteString(token[r.IntN(len(token)-10):][:5+r.IntN(6)])
		return b.String()
	}
	writeHost(&b, r)
	writePath(&b, r)
	size := 0 // of a url with a long query: where its last parameter is cut
	switch n := r.IntN(100); {
	case n == 0:
		size = MaxURLBytes - len(fragments[0]) - r.IntN(512)
	case n < 6:
		size = b.Len() + 300 + r.IntN(3700)
	}
	if size > 0 || r.IntN(3) == 0 {
		writeQuery(&b, r, size)
	}
	u := b.String()
	if size > 0 {
		u = u[:size] // the query is ASCII: any byte is a boundary
	}
	if r.IntN(20) == 0 {
		u += fragments[r.IntN(len(fragments))]
	}
	return u
}

// fragments end some urls, the longest first.
var fragments = []string{"#%D0%B3%D0%BB%D0%B0%D0%B2%D0%B0-2", "#:~:text=climate%20report", "#comments", "#section-3", "#"}

func writeHost(b *strings.Builder, r *rand.Rand) {
	if r.IntN(7) == 0 {
		idn := idnHosts[r.IntN(len(idnHosts))]
		b.WriteString(subdomains[r.IntN(len(subdomains))])
		b.WriteString(idn[r.IntN(2)])
		return
	}
	b.WriteString(subdomains[r.IntN(len(subdomains))])
	b.WriteString(hostNames[r.IntN(len(hostNames))])
	if r.IntN(2) == 0 {
		b.WriteString(strconv.Itoa(r.IntN(100)))
	}
	b.WriteByte('.')
	b.WriteString(tlds[r.IntN(len(tlds))])
}

// writePath writes a path of one to five segments; the last one carries an
// article id, as most article urls do, so that urls rarely repeat.
func writePath(b *strings.Builder, r *rand.Rand) {
	for range r.IntN(5) {
		b.WriteByte('/')
		switch r.IntN(8) {
		case 0:
			b.WriteString(url.PathEscape(unicodeWords[r.IntN(len(unicodeWords))]))
		case 1:
			b.WriteString(unicodeWords[r.IntN(len(unicodeWords))]) // as a browser shows it
		case 2:
			b.WriteString("2026/" + strconv.Itoa(1+r.IntN(12)) + "/" + strconv.Itoa(1+r.IntN(28)))
		default:
			b.WriteString(pathWords[r.IntN(len(pathWords))])
		}
	}
	b.WriteByte('/')
	for range r.IntN(6) {
		b.WriteString(pathWords[r.IntN(len(pathWords))])
		b.WriteByte('-')
	}
	b.WriteString(strconv.Itoa(r.IntN(1e9)))
	b.WriteString([]string{"", "", ".html", ".php", "/", "/amp"}[r.IntN(6)])
}

// writeQuery writes a query string of parameters, going on until b holds
// size bytes (at least one parameter).
func writeQuery(b *strings.Builder, r *rand.Rand, size int) {
	sep := byte('?')
	for b.Len() < size || sep == '?' {
		b.WriteByte(sep)
		sep = '&'
		switch r.IntN(6) {
		case 0:
			b.WriteString("utm_source=" + utmSources[r.IntN(len(utmSources))] + "&utm_medium=email&utm_campaign=autumn-2026")
		case 1:
			b.WriteString("token=" + token[r.IntN(512):][:20+r.IntN(300)])
		case 2:
			b.WriteString("q=" + url.QueryEscape(unicodeWords[r.IntN(len(unicodeWords))]+" "+pathWords[r.IntN(len(pathWords))]))
		case 3:
			tag := pathWords[r.IntN(len(pathWords))]
			b.WriteString("tag=" + tag + "&tag=" + tag + "&tag=" + pathWords[r.IntN(len(pathWords))])
		case 4:
			b.WriteString("id=" + strconv.Itoa(r.IntN(1e6)) + "&page=" + strconv.Itoa(1+r.IntN(20)))
		default:
			b.WriteString("ref=" + url.QueryEscape("https://"+hostNames[r.IntN(len(hostNames))]+".com/?a=1&b=2"))
		}
	}
}
