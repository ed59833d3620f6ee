package docgen

import (
	"math/rand/v2"
	"slices"
	"strconv"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/document"
)

// The fields of a line, in the order most producers write them.
const (
	fieldURL = iota
	fieldPubDate
	fieldFetchTime
	fieldText
)

// encoding is how one line writes its document. Every choice is valid input
// that docexec must read alike; producers differ in them.
type encoding struct {
	order  []int   // the fields, in the order written
	quoted [4]bool // by field: an integer written as a decimal string, as protojson does
}

var usualEncoding = encoding{order: []int{fieldURL, fieldPubDate, fieldFetchTime, fieldText}}

// drawEncoding mostly returns usualEncoding; a few lines quote integers or
// shuffle their keys.
func drawEncoding(r *rand.Rand) encoding {
	e := usualEncoding
	if r.IntN(20) == 0 {
		e.order = slices.Clone(e.order)
		r.Shuffle(len(e.order), func(i, j int) { e.order[i], e.order[j] = e.order[j], e.order[i] })
	}
	e.quoted[fieldPubDate] = r.IntN(30) == 0
	e.quoted[fieldFetchTime] = r.IntN(30) == 0
	return e
}

// appendLine appends d as one JSON object without firstFetchTime, which
// input does not carry.
func appendLine(b []byte, d document.Document, e encoding) []byte {
	sep := byte('{')
	for _, f := range e.order {
		b = append(b, sep)
		sep = ','
		switch f {
		case fieldURL:
			b = append(b, `"url":`...)
			b = codec.AppendJSONString(b, d.URL)
		case fieldPubDate:
			b = append(b, `"pubDate":`...)
			b = appendUint(b, d.PubDate, e.quoted[f])
		case fieldFetchTime:
			b = append(b, `"fetchTime":`...)
			b = appendUint(b, d.FetchTime, e.quoted[f])
		case fieldText:
			b = append(b, `"text":`...)
			b = codec.AppendJSONString(b, d.Text)
		}
	}
	return append(b, '}')
}

func appendUint(b []byte, v uint64, quoted bool) []byte {
	if quoted {
		b = append(b, '"')
		b = strconv.AppendUint(b, v, 10)
		return append(b, '"')
	}
	return strconv.AppendUint(b, v, 10)
}

// badLines are the kinds of bad line, each a broken copy of a good update
// that the codec must refuse and dead-letter.
var badLines = []struct {
	reason string
	line   func(b []byte, d document.Document) []byte
}{
	{"not JSON: a message cut short", func(b []byte, d document.Document) []byte {
		line := appendLine(nil, d, usualEncoding)
		return append(b, line[:runeStart(line, len(line)/2)]...)
	}},
	{"no url", func(b []byte, d document.Document) []byte {
		return appendLine(b, d, encoding{order: []int{fieldPubDate, fieldFetchTime, fieldText}})
	}},
	{"no fetchTime", func(b []byte, d document.Document) []byte {
		return appendLine(b, d, encoding{order: []int{fieldURL, fieldPubDate, fieldText}})
	}},
	{"a negative fetchTime", func(b []byte, d document.Document) []byte {
		return appendWithFetchTime(b, d, "-"+strconv.FormatUint(d.FetchTime, 10))
	}},
	{"a fetchTime above the uint64 range", func(b []byte, d document.Document) []byte {
		return appendWithFetchTime(b, d, "18446744073709551616")
	}},
	{"a NUL in the text", func(b []byte, d document.Document) []byte {
		at := runeStart(d.Text, len(d.Text)/2)
		d.Text = d.Text[:at] + "\x00" + d.Text[at:]
		return appendLine(b, d, usualEncoding)
	}},
}

// appendWithFetchTime appends d with fetchTime written as the JSON number
// value, which need not be one the document could hold.
func appendWithFetchTime(b []byte, d document.Document, value string) []byte {
	b = append(b, `{"url":`...)
	b = codec.AppendJSONString(b, d.URL)
	b = append(b, `,"fetchTime":`...)
	b = append(b, value...)
	b = append(b, `,"text":`...)
	b = codec.AppendJSONString(b, d.Text)
	return append(b, '}')
}
