package docgen

import (
	"math/rand/v2"
	"strings"
	"unicode/utf8"
)

// A script is a corpus of one writing system: texts are drawn word by word
// from it (one random number a word, never one a byte), which is what keeps
// tens of megabytes a second within reach.
type script struct {
	words []string
	space string // between words; "" where the script is written without spaces
	stop  string // ends a sentence; the next word adds the space
}

var (
	english = script{space: " ", stop: ".", words: strings.Fields(`the of and to in
		is that for on with as was by at from this are be it an have has not
		market report city government company people year new said more than after
		first time over week data network update policy court school health energy
		climate research users software release security election football weather`)}
	accentedLatin = script{space: " ", stop: ".", words: []string{
		"élève", "café", "cafe\u0301", "naïve", "façade", "crème", "brûlée", "déjà", "où",
		"Straße", "über", "Größe", "Mädchen", "schön", "mañana", "niño", "corazón", "año",
		"São", "coração", "informação", "Łódź", "żółć", "gęślą", "jaźń", "příliš",
		"žluťoučký", "kůň", "Tiếng", "Việt", "Nguyễn", "thủ", "đô", "Ærø", "Ångström",
		"smørrebrød", "İstanbul", "ağaç", "ﬁnance", // the "ﬁ" ligature, a compatibility character
		"a\u0300\u0301\u0302\u0303", "o\u0308\u0304", "Z\u0334\u0321\u031ba\u0338\u0322l\u0337g\u0336o\u0335", // stacked diacritics
	}}
	chinese = script{space: "", stop: "。", words: strings.Fields(`的 中国 经济 发展
		我们 新闻 报道 今天 市场 技术 人工智能 互联网 公司 政府 北京 上海 表示 记者
		国家 数据 研究 学生 城市 天气 电脑 手机 网络 安全 ， 、 “ ” 《 》`)}
	japanese = script{space: "", stop: "。", words: strings.Fields(`これは ニュース 日本
		東京 ありがとう カタカナ ひらがな の は を に が です ます 記事 コンピューター
		大阪 経済 政府 発表 今日 天気 ｶﾀｶﾅ 「 」 、 ・ ー`)}
	korean = script{space: " ", stop: ".", words: strings.Fields(`안녕하세요 뉴스
		대한민국 서울 경제 기술 오늘 사람들 인터넷 회사 정부 발표 기자 시장 날씨 학교
		컴퓨터 데이터 보안 했다 있다 것이다`)}
	cyrillic = script{space: " ", stop: ".", words: strings.Fields(`новости Москва
		экономика сегодня правительство интернет компания в и на что это как по
		заявил рынок данные їжак ґанок Київ Україна Београд љубав њега Ёлка съешь
		щи Ⅻ`)}
	greek = script{space: " ", stop: ".", words: strings.Fields(`Καλημέρα ειδήσεις
		Αθήνα οικονομία σήμερα κυβέρνηση και το της στην ότι διαδίκτυο εταιρεία ἀρχή
		λόγος ψυχή Ωμέγα ϰαι`)}
	arabic = script{space: " ", stop: ".", words: strings.Fields(`مرحبا أخبار القاهرة
		الاقتصاد اليوم الحكومة الإنترنت شركة في من على إلى أن هذا قال السوق بيانات
		بِسْمِ ٱللَّٰهِ ١٢٣ ، ؟`)}
	hebrew = script{space: " ", stop: ".", words: strings.Fields(`שלום חדשות ירושלים
		כלכלה היום ממשלה אינטרנט חברה של את על עם זה אמר שוק נתונים בְּרֵאשִׁית
		בָּרָא ״ ׳`)}
	devanagari = script{space: " ", stop: "।", words: strings.Fields(`नमस्ते समाचार
		भारत दिल्ली अर्थव्यवस्था आज सरकार इंटरनेट कंपनी के में है और की से कहा बाज़ार
		क्षत्रिय श्री ॐ १२३`)}
	thai = script{space: "", stop: " ", words: strings.Fields(`สวัสดี ข่าว ประเทศไทย
		กรุงเทพ เศรษฐกิจ วันนี้ รัฐบาล อินเทอร์เน็ต บริษัท ที่ และ ของ ใน ได้ ว่า
		กล่าว ตลาด ข้อมูล น้ำ ๑๒๓`)}

	// scripts are the primary scripts of pages, English repeated to make
	// it the most common, as it is on the web.
	scripts = []*script{&english, &english, &english, &english, &english, &english,
		&accentedLatin, &accentedLatin, &chinese, &japanese, &korean, &cyrillic,
		&greek, &arabic, &hebrew, &devanagari, &thai}
)

// inline are fragments that appear among the words of any script: the
// characters and sequences that break naive handling of text.
var inline = []string{
	// emoji: plain, skin tones, ZWJ sequences, flags, keycaps, variation selectors
	"😀", "👍🏽", "👩🏿‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🤷‍♀️", "🇫🇷", "🇯🇵", "🇺🇦", "🇧🇷", "❤️", "1️⃣", "🦄",
	// quotes of every kind
	`"quoted"`, `'single'`, "«guillemets»", "“curly”", "‘curly’", "„unten“", "「かぎ」",
	// backslashes, as in paths, escapes shown as text and regular expressions
	`C:\Windows\System32`, `\\server\share`, `\n`, `\"`, `\d+\.\w*`, `\u0041`,
	// white space and invisible characters: tab, line and paragraph
	// separators (U+2028, U+2029), BOM, zero-width space and joiner, bidi marks
	"\t", "\u2028", "\u2029", "\ufeff", "\u200b", "\u200d", "\u200f", "\u200e", "\u00a0",
	// markup and entities inside running text
	"&amp;", "&lt;b&gt;", "&#8217;", "&nbsp;", "<b>", "</b>", "<br/>",
	`<a href="/search?q=a&amp;lang=en" target="_blank">link</a>`,
	"a < b && c > d", "</script>",
	// numbers and units
	"2026-10-14", "3.14159", "1,000,000", "$19.99", "€5", "½", "²", "−40 °C",
	// long words without spaces
	"Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
	"pneumonoultramicroscopicsilicovolcanoconiosis",
	"https://example.com/a/very/long/path/that/someone/pasted?with=query&and=more#frag",
	strings.Repeat("ha", 300),
	strings.Repeat("😂", 64),
	token,
}

// token is a long base64-like string; tokens of urls and texts are cut
// from it.
var token = base64ish(1024)

// blocks stand between paragraphs of HTML pages.
var blocks = []string{
	"<script>if (a < b && c > d) { document.write(\"</p>\"); }</script>\n",
	"<script type=\"application/ld+json\">{\"@type\":\"NewsArticle\",\"headline\":\"x\"}</script>\n",
	"<!-- comment -- with dashes -->\n",
	"<style>p{margin:0}a:hover>b{color:red}</style>\n",
	"<pre>\tfunc main() {\n\t\tfmt.Println(\"hi\\n\")\n\t}\n</pre>\n",
	"<div id=\"main\" data-x='y'><img src=\"/a.png\" alt=\"&quot;\"></div>\n",
	"<nav>Home | News | Sport | Weather</nav>\n",
}

// paragraph openers of HTML pages; each is closed by "</p>".
var openers = []string{"<p>", `<p class="x">`, `<p class="lead" dir="auto">`, `<p style="text-align:right">`}

// paragraph separators of plain pages.
var separators = []string{"\n\n", "\n\n", "\n\n", "\n", "\r\n\r\n", "\u2029", "\u2028"}

// base64ish returns n characters that look like a base64 token.
func base64ish(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13 // xorshift: cheap, and the same bytes on every run
		x ^= x >> 17
		x ^= x << 5
		b[i] = alphabet[x%64]
	}
	return string(b)
}

// appendText appends a text of exactly size bytes (less at most three, to
// end on a character boundary) for a page written mainly in s.
func appendText(b []byte, r *rand.Rand, s *script, html bool, size int) []byte {
	start := len(b)
	if r.IntN(50) == 0 {
		b = append(b, "\ufeff"...) // a BOM that the crawler kept
	}
	for len(b)-start < size {
		b = appendParagraph(b, r, s, html)
	}
	return b[:start+runeStart(b[start:], size)]
}

// appendParagraph appends one paragraph, mostly in s and sometimes in
// another script, as pages quote and mix languages.
func appendParagraph(b []byte, r *rand.Rand, s *script, html bool) []byte {
	if r.IntN(8) == 0 {
		s = scripts[r.IntN(len(scripts))]
	}
	if html {
		if r.IntN(6) == 0 {
			b = append(b, blocks[r.IntN(len(blocks))]...)
		}
		b = append(b, openers[r.IntN(len(openers))]...)
	}
	words := 10 + r.IntN(100)
	for i := range words {
		// One draw decides the word, whether an inline fragment takes
		// its place, and whether a sentence ends after it.
		x := r.Uint64()
		if i > 0 {
			b = append(b, s.space...)
		}
		if x&63 == 0 {
			b = append(b, inline[(x>>6)%uint64(len(inline))]...)
		} else {
			b = append(b, s.words[(x>>6)%uint64(len(s.words))]...)
		}
		if x>>60 == 0 || i == words-1 {
			b = append(b, s.stop...)
		}
	}
	if html {
		return append(b, "</p>\n"...)
	}
	return append(b, separators[r.IntN(len(separators))]...)
}

// runeStart returns the largest n <= size that does not split a UTF-8
// sequence of b (len(b) when b is shorter).
func runeStart[T string | []byte](b T, size int) int {
	if size >= len(b) {
		return len(b)
	}
	for size > 0 && !utf8.RuneStart(b[size]) {
		size--
	}
	return size
}
