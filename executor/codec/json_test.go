package codec_test

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/document/documenttest"
)

const maxUint64 = ^uint64(0)

func TestDecodeJSONRejectsTheBadVectors(t *testing.T) {
	c := mustNew(t, "json")
	for _, l := range documenttest.BadJSON() {
		t.Run(l.Name, func(t *testing.T) {
			d, err := c.Decode([]byte(l.Line))
			if err == nil {
				t.Fatalf("decoded %s to %+v", l.Line, d)
			}
			checkBadInput(t, err)
		})
	}
}

func TestDecodeJSONAcceptsTheGoodVectors(t *testing.T) {
	c := mustNew(t, "json")
	for _, l := range documenttest.GoodJSON() {
		t.Run(l.Name, func(t *testing.T) {
			d, err := c.Decode([]byte(l.Line))
			if err != nil {
				t.Fatal(err)
			}
			if d != l.Doc {
				t.Errorf("got %+v, want %+v", d, l.Doc)
			}
		})
	}
}

// badJSON are our own bad lines, each with a part of the reason it must
// give: the field at fault, or that the message is not JSON at all.
var badJSON = []struct {
	name, line, reason string
}{
	{"empty input is not JSON", ``, "not JSON"},
	{"a NUL in the text cannot be stored", `{"url":"u","text":"a\u0000b"}`, "text: contains a NUL character"},
	{"a NUL in the url cannot be stored", `{"url":"u\u0000"}`, "url: contains a NUL character"},
	{"white space alone is not JSON", " \n\t", "not JSON"},
	{"null is not an object", `null`, "not a JSON object"},
	{"a string is not an object", `"https://a.example/"`, "not a JSON object"},
	{"a number is not an object", `12`, "not a JSON object"},
	{"two objects are not one JSON text", `{"url":"u"} {"url":"v"}`, "not JSON"},
	{"trailing garbage is not JSON", `{"url":"u"}x`, "not JSON"},
	{"a trailing comma is not JSON", `{"url":"u",}`, "not JSON"},
	{"an unterminated object is not JSON", `{"url":"u"`, "not JSON"},
	{"an unterminated string is not JSON", `{"url":"u`, "not JSON"},
	{"a missing colon is not JSON", `{"url" "u"}`, "not JSON"},
	{"single quotes are not JSON", `{'url':'u'}`, "not JSON"},
	{"an unquoted key is not JSON", `{url:"u"}`, "not JSON"},
	{"a byte order mark is not JSON", "\uFEFF{\"url\":\"u\"}", "not JSON"},
	{"a leading zero is not JSON, even in an ignored value", `{"url":"u","x":01}`, "not JSON"},
	{"a leading plus sign is not JSON", `{"url":"u","pubDate":+1}`, "not JSON"},
	{"a bare minus sign is not JSON", `{"url":"u","pubDate":-}`, "not JSON"},
	{"a fraction without digits is not JSON", `{"url":"u","pubDate":1.}`, "not JSON"},
	{"an exponent without digits is not JSON", `{"url":"u","pubDate":1e}`, "not JSON"},
	{"NaN is not JSON", `{"url":"u","pubDate":NaN}`, "not JSON"},
	{"a misspelt literal is not JSON", `{"url":"u","x":nul}`, "not JSON"},
	{"a mismatched bracket in an ignored value is not JSON", `{"url":"u","x":[1,2}}`, "not JSON"},
	{"a colon in an ignored array is not JSON", `{"url":"u","x":[1:2]}`, "not JSON"},
	{"a short \\u escape is not JSON", `{"url":"a\u00e"}`, "not JSON"},
	{"an unknown escape is not JSON", `{"url":"a\x41"}`, "not JSON"},
	{"a raw control character in a string is not JSON", "{\"url\":\"u\",\"text\":\"a\tb\"}", "not JSON"},
	{"nesting deeper than 10000 is refused", `{"url":"u","x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`, "nesting too deep"},
	{"a syntax error is reported before a bad field", `{"url":7,`, "not JSON"},

	{"url is required", `{"text":"t"}`, "url: missing or empty"},
	{"a null url is missing", `{"url":null}`, "url: missing or empty"},
	{"an empty url is missing", `{"url":""}`, "url: missing or empty"},
	{"keys are case-sensitive, so URL is not url", `{"URL":"u"}`, "url: missing or empty"},
	{"a url must be a string, not a number", `{"url":7}`, "url: 7 is not a string"},
	{"a url must be a string, not a boolean", `{"url":true}`, "url: true is not a string"},
	{"a url must be a string, not an object", `{"url":{"href":"u"}}`, "url: an object is not a string"},
	{"a url must be a string, not an array", `{"url":["u"]}`, "url: an array is not a string"},
	{"a url must be valid UTF-8", "{\"url\":\"u\xff\"}", "url: not valid UTF-8"},
	{"a url must not hold a lone high surrogate", `{"url":"u\ud800"}`, "url: not valid UTF-8"},
	{"a url must not hold a high surrogate followed by a letter", `{"url":"u\ud800\u0041"}`, "url: not valid UTF-8"},
	{"a url must not hold a lone low surrogate", `{"url":"u\udc00\ud800"}`, "url: not valid UTF-8"},
	{"url twice is ambiguous", `{"url":"u","url":"v"}`, "url: duplicate key"},
	{"text must be a string, not a number", `{"url":"u","text":7}`, "text: 7 is not a string"},
	{"text must be a string, not a boolean", `{"url":"u","text":false}`, "text: false is not a string"},
	{"text must be a string, not an array", `{"url":"u","text":["a"]}`, "text: an array is not a string"},
	{"text must be valid UTF-8", "{\"url\":\"u\",\"text\":\"\xc3\x28\"}", "text: not valid UTF-8"},
	{"text twice is ambiguous", `{"url":"u","text":"a","text":"b"}`, "text: duplicate key"},

	{"a negative number is refused", `{"url":"u","fetchTime":-1}`, "fetchTime: -1 is not an unsigned 64-bit integer"},
	{"minus zero is refused", `{"url":"u","fetchTime":-0}`, "fetchTime: -0 is not"},
	{"a fractional number is refused", `{"url":"u","pubDate":1.5}`, "pubDate: 1.5 is not"},
	{"a whole number written with a fraction is refused", `{"url":"u","pubDate":1.0}`, "pubDate: 1.0 is not"},
	{"a number with an exponent is refused", `{"url":"u","pubDate":1e3}`, "pubDate: 1e3 is not"},
	{"a number with a capital exponent is refused", `{"url":"u","pubDate":1E+3}`, "pubDate: 1E+3 is not"},
	{"2^64 as a number is refused", `{"url":"u","fetchTime":18446744073709551616}`, "fetchTime: 18446744073709551616 is not"},
	{"2^64 as a string is refused", `{"url":"u","fetchTime":"18446744073709551616"}`, `fetchTime: "18446744073709551616" is not`},
	{"a huge number is refused", `{"url":"u","pubDate":99999999999999999999999999}`, "pubDate: 99999999999999999999999999 is not"},
	{"a negative string is refused", `{"url":"u","fetchTime":"-1"}`, `fetchTime: "-1" is not an unsigned 64-bit integer`},
	{"a string with a plus sign is refused", `{"url":"u","fetchTime":"+1"}`, `fetchTime: "+1" is not`},
	{"an empty string is refused", `{"url":"u","fetchTime":""}`, `fetchTime: "" is not`},
	{"a string with spaces is refused", `{"url":"u","fetchTime":" 1"}`, `fetchTime: " 1" is not`},
	{"a fractional string is refused", `{"url":"u","fetchTime":"1.0"}`, `fetchTime: "1.0" is not`},
	{"a string with an exponent is refused", `{"url":"u","fetchTime":"1e3"}`, `fetchTime: "1e3" is not`},
	{"a hexadecimal string is refused", `{"url":"u","fetchTime":"0x10"}`, `fetchTime: "0x10" is not`},
	{"a boolean is not a number", `{"url":"u","pubDate":true}`, "pubDate: true is not"},
	{"an object is not a number", `{"url":"u","pubDate":{}}`, "pubDate: an object is not"},
	{"an array is not a number", `{"url":"u","pubDate":[1]}`, "pubDate: an array is not"},
	{"fetchTime twice is ambiguous", `{"url":"u","fetchTime":1,"fetchTime":1}`, "fetchTime: duplicate key"},
	{"a missing fetchTime is not 0", `{"url":"u","pubDate":1,"text":"t"}`, "fetchTime: missing"},
	{"a missing pubDate is not 0", `{"url":"u","fetchTime":1,"text":"t"}`, "pubDate: missing"},
	{"a null fetchTime is missing", `{"url":"u","pubDate":1,"fetchTime":null}`, "fetchTime: missing"},
	{"a null pubDate is missing", `{"url":"u","pubDate":null,"fetchTime":1}`, "pubDate: missing"},
	{"a long bad value is cut short in the reason", `{"url":"u","pubDate":"` + strings.Repeat("x", 1000) + `"}`, `pubDate: "xxxxxxxxx`},
}

func TestDecodeJSONRejectsBadInput(t *testing.T) {
	c := mustNew(t, "json")
	for _, tc := range badJSON {
		t.Run(tc.name, func(t *testing.T) {
			d, err := c.Decode([]byte(tc.line))
			if err == nil {
				t.Fatalf("decoded %.200q to %+v", tc.line, d)
			}
			bad := checkBadInput(t, err)
			if !strings.Contains(bad.Reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", bad.Reason, tc.reason)
			}
			if isSyntax := strings.HasPrefix(bad.Reason, "not JSON"); isSyntax == json.Valid([]byte(tc.line)) {
				t.Errorf("reason %q, but encoding/json says valid=%v", bad.Reason, !isSyntax)
			}
			if len(bad.Reason) > 200 {
				t.Errorf("reason is %d bytes long", len(bad.Reason))
			}
		})
	}
}

func docOf(url string, pub, fetch uint64, text string) document.Document {
	return document.Document{URL: url, PubDate: pub, FetchTime: fetch, Text: text}
}

var goodJSON = []struct {
	name, line string
	want       document.Document
}{
	{"0 is accepted as a number", `{"url":"u","pubDate":0,"fetchTime":0}`, docOf("u", 0, 0, "")},
	{"0 is accepted as a string", `{"url":"u","pubDate":"0","fetchTime":"0"}`, docOf("u", 0, 0, "")},
	{"the uint64 maximum is exact as a number", `{"url":"u","pubDate":18446744073709551615,"fetchTime":18446744073709551615}`, docOf("u", maxUint64, maxUint64, "")},
	{"the uint64 maximum is exact as a string", `{"url":"u","pubDate":"18446744073709551615","fetchTime":"18446744073709551615"}`, docOf("u", maxUint64, maxUint64, "")},
	{"2^53+1 is exact (a float64 would round it)", `{"url":"u","pubDate":9007199254740993,"fetchTime":"9007199254740993"}`, docOf("u", 1<<53+1, 1<<53+1, "")},
	{"leading zeros are allowed in a string", `{"url":"u","pubDate":1,"fetchTime":"007"}`, docOf("u", 1, 7, "")},
	{"an absent text is empty", `{"url":"u","pubDate":1,"fetchTime":2}`, docOf("u", 1, 2, "")},
	{"a null text is empty", `{"url":"u","pubDate":1,"fetchTime":2,"text":null}`, docOf("u", 1, 2, "")},
	{"keys may come in any order", `{"text":"t","fetchTime":2,"pubDate":1,"url":"u"}`, docOf("u", 1, 2, "t")},
	{"white space is allowed between all tokens", " \r\n\t{ \"url\" : \"u\" ,\n\"fetchTime\"\t:\t2 , \"pubDate\": 1 } \n", docOf("u", 1, 2, "")},
	{"firstFetchTime is ignored whatever it holds", `{"url":"u","firstFetchTime":"not a number","fetchTime":3,"pubDate":1}`, docOf("u", 1, 3, "")},
	{"firstFetchTime may even be out of range or repeated", `{"url":"u","pubDate":1,"fetchTime":2,"firstFetchTime":-1e999,"firstFetchTime":{}}`, docOf("u", 1, 2, "")},
	{"unknown keys with nested values are ignored", `{"url":"u","pubDate":1,"fetchTime":2,"meta":{"a":[1,-2.5e-3,true,false,null,{"b":"c"}],"d":{}},"e":[]}`, docOf("u", 1, 2, "")},
	{"ignored values are not checked for UTF-8", "{\"url\":\"u\",\"pubDate\":1,\"fetchTime\":2,\"x\":\"\xff\",\"\xfe\":1}", docOf("u", 1, 2, "")},
	{"a key may be escaped", `{"\u0075rl":"u","fetch\u0054ime":4,"pubDat\u0065":1}`, docOf("u", 1, 4, "")},
	{"escapes in strings are decoded", `{"url":"u\/v","pubDate":1,"fetchTime":2,"text":"a\"b\\c\/d\b\f\n\r\t\u00e9\u0001"}`, docOf("u/v", 1, 2, "a\"b\\c/d\b\f\n\r\té\x01")},
	{"a surrogate pair is one character", `{"url":"u","pubDate":1,"fetchTime":2,"text":"\ud83d\ude00"}`, docOf("u", 1, 2, "😀")},
	{"raw UTF-8 is kept as it is", `{"url":"https://ü.example/","pubDate":1,"fetchTime":2,"text":"héllo 世界 😀"}`, docOf("https://ü.example/", 1, 2, "héllo 世界 😀")},
	{"raw U+2028 and U+2029 are valid JSON", "{\"url\":\"u\",\"pubDate\":1,\"fetchTime\":2,\"text\":\"a\u2028b\u2029c\"}", docOf("u", 1, 2, "a\u2028b\u2029c")},
	{"a digit string may be escaped", `{"url":"u","pubDate":1,"fetchTime":"\u0031\u0032"}`, docOf("u", 1, 12, "")},
	{"nesting up to 10000 deep is accepted", `{"url":"u","pubDate":1,"fetchTime":2,"x":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`, docOf("u", 1, 2, "")},
}

func TestDecodeJSONAcceptsGoodInput(t *testing.T) {
	c := mustNew(t, "json")
	for _, tc := range goodJSON {
		t.Run(tc.name, func(t *testing.T) {
			if !json.Valid([]byte(tc.line)) {
				t.Error("encoding/json says it is not JSON")
			}
			d, err := c.Decode([]byte(tc.line))
			if err != nil {
				t.Fatal(err)
			}
			if d != tc.want {
				t.Errorf("got %+v, want %+v", d, tc.want)
			}
		})
	}
}

// emittedStates returns every state that the reference merges emit.
func emittedStates() []document.Document {
	var out []document.Document
	for _, c := range documenttest.MergeCases() {
		for _, e := range c.Emits {
			if e != nil {
				out = append(out, *e)
			}
		}
	}
	return out
}

func TestJSONRoundTripsEveryEmittedState(t *testing.T) {
	c := mustNew(t, "json")
	for _, state := range emittedStates() {
		b := c.Encode(state)
		got, err := c.Decode(b)
		if err != nil {
			t.Fatalf("decoding %s: %v", b, err)
		}
		if want := update(state); got != want {
			t.Errorf("%s decoded to %+v, want %+v", b, got, want)
		}
	}
}

func TestEncodeJSONWritesExactNumbers(t *testing.T) {
	c := mustNew(t, "json")
	for _, state := range emittedStates() {
		b := c.Encode(state)
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("encoding/json cannot read %s: %v", b, err)
		}
		if len(m) != 5 || m["url"] != state.URL || m["text"] != state.Text {
			t.Errorf("%s: want the five keys and url %q, text %q", b, state.URL, state.Text)
		}
		for key, want := range map[string]uint64{"pubDate": state.PubDate, "fetchTime": state.FetchTime, "firstFetchTime": state.FirstFetchTime} {
			// A json.Number means a JSON number, not a string.
			if n, ok := m[key].(json.Number); !ok || string(n) != strconv.FormatUint(want, 10) {
				t.Errorf("%s: %s is %#v, want the number %d", b, key, m[key], want)
			}
		}
	}
}

func TestEncodeJSON(t *testing.T) {
	c := mustNew(t, "json")
	t.Run("keys come in the documented order, without spaces", func(t *testing.T) {
		got := string(c.Encode(document.Document{URL: "u", PubDate: 1, FetchTime: 18446744073709551615, Text: "t", FirstFetchTime: 0}))
		want := `{"url":"u","pubDate":1,"fetchTime":18446744073709551615,"text":"t","firstFetchTime":0}`
		if got != want {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	})
	t.Run("strings are escaped where JSON requires it, and no more", func(t *testing.T) {
		// U+2028 and U+2029 are valid raw in JSON: escaping them would
		// inflate texts that hold many by a factor of two.
		got := string(c.Encode(document.Document{URL: "https://a.example/?a=1&b=<2>", Text: "q\"b\\s/\n\r\t\x00\x1f\x7fé😀\u2028\u2029"}))
		want := `{"url":"https://a.example/?a=1&b=<2>","pubDate":0,"fetchTime":0,"text":"q\"b\\s/\n\r\t\u0000\u001f` + "\x7fé😀\u2028\u2029" + `","firstFetchTime":0}`
		if got != want {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	})
	t.Run("invalid UTF-8 becomes U+FFFD (one per bad run) so that the output stays valid JSON", func(t *testing.T) {
		b := c.Encode(document.Document{URL: "u\xff", Text: "a\xc3\x28b\xed\xa0\x80"})
		var got document.Document
		if err := json.Unmarshal(b, &got); err != nil || !json.Valid(b) {
			t.Fatalf("%q is not valid JSON: %v", b, err)
		}
		if got.URL != "u\uFFFD" || got.Text != "a\uFFFD(b\uFFFD" {
			t.Errorf("got url %q text %q", got.URL, got.Text)
		}
		if _, err := c.Decode(b); err != nil {
			t.Errorf("our decoder rejects it: %v", err)
		}
	})
}

// The generator of test data sizes texts by JSONStringLen and writes them by
// AppendJSONString: the two must agree on every byte.
func TestJSONStringLenIsWhatAppendJSONStringWrites(t *testing.T) {
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	for _, s := range []string{"", "plain text", "q\"b\\s/\n\r\t\x00\x1f\x7fé😀\u2028\u2029", "a\xc3\x28b\xed\xa0\x80", string(every),
		strings.Repeat("eight by\n", 20)} {
		if got, want := codec.JSONStringLen(s), len(codec.AppendJSONString(nil, s))-2; got != want {
			t.Errorf("JSONStringLen(%q) = %d, AppendJSONString wrote %d", s, got, want)
		}
	}
}

// protojson is the reference for "integers as protojson writes them".
func TestJSONAgreesWithProtojson(t *testing.T) {
	c := mustNew(t, "json")
	for _, state := range append(emittedStates(), protoStates...) {
		written, err := protojson.Marshal(toMessage(state))
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Decode(written)
		if err != nil {
			t.Fatalf("decoding protojson's %s: %v", written, err)
		}
		if want := update(state); got != want {
			t.Errorf("protojson's %s decoded to %+v, want %+v", written, got, want)
		}
		m := documentType().New().Interface()
		if err := protojson.Unmarshal(c.Encode(state), m); err != nil {
			t.Fatalf("protojson cannot read %s: %v", c.Encode(state), err)
		}
		if got := fromMessage(m); got != state {
			t.Errorf("protojson read %s as %+v, want %+v", c.Encode(state), got, state)
		}
	}
}
