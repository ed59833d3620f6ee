package codec_test

import (
	"strings"
	"testing"

	"github.com/docexec/docexec/executor/document"
)

// benchDocs are a typical update of about 200 bytes in JSON, one with the
// text of a long web page, and one with a page in several scripts.
var benchDocs = []struct {
	name string
	doc  document.Document
}{
	{"typical", document.Document{
		URL:            "https://news.example.com/2024/05/17/some-article-about-things",
		PubDate:        1715900000000,
		FetchTime:      1715943210123,
		Text:           strings.Repeat("Lorem ipsum dolor sit amet. ", 3) + "Fin.",
		FirstFetchTime: 1715943210123,
	}},
	{"64KiB-text", document.Document{
		URL:            "https://news.example.com/2024/05/17/a-long-read",
		PubDate:        1715900000000,
		FetchTime:      1715943210123,
		Text:           strings.Repeat("Lorem ipsum dolor sit amet, “consectetur” adipiscing élit.\n", 1100)[:64<<10],
		FirstFetchTime: 1715943210123,
	}},
	{"64KiB-text-many-scripts", document.Document{
		URL:            "https://news.example.com/2024/05/17/多言語",
		PubDate:        1715900000000,
		FetchTime:      1715943210123,
		Text:           strings.ToValidUTF8(strings.Repeat("Новости дня. 今日のニュース。 أخبار اليوم. समाचार। Ειδήσεις.\n", 700)[:64<<10], ""),
		FirstFetchTime: 1715943210123,
	}},
}

func benchmarkDecode(b *testing.B, format string) {
	c := mustNew(b, format)
	for _, bd := range benchDocs {
		b.Run(bd.name, func(b *testing.B) {
			in := c.Encode(bd.doc)
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Decode(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchmarkEncode(b *testing.B, format string) {
	c := mustNew(b, format)
	for _, bd := range benchDocs {
		b.Run(bd.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.Encode(bd.doc))))
			b.ReportAllocs()
			for b.Loop() {
				c.Encode(bd.doc)
			}
		})
	}
}

func BenchmarkDecodeJSON(b *testing.B)     { benchmarkDecode(b, "json") }
func BenchmarkEncodeJSON(b *testing.B)     { benchmarkEncode(b, "json") }
func BenchmarkDecodeProtobuf(b *testing.B) { benchmarkDecode(b, "protobuf") }
func BenchmarkEncodeProtobuf(b *testing.B) { benchmarkEncode(b, "protobuf") }
