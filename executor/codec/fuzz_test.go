package codec_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/document/documenttest"
)

// addSeed adds a seed unless it is long: long ones slow every mutation down
// and the table tests cover them already.
func addSeed(f *testing.F, b []byte) {
	if len(b) <= 1000 {
		f.Add(b)
	}
}

func FuzzDecodeJSON(f *testing.F) {
	c := mustNew(f, "json")
	for _, l := range append(documenttest.GoodJSON(), documenttest.BadJSON()...) {
		addSeed(f, []byte(l.Line))
	}
	for _, tc := range goodJSON {
		addSeed(f, []byte(tc.line))
	}
	for _, tc := range badJSON {
		addSeed(f, []byte(tc.line))
	}
	for _, state := range append(emittedStates(), protoStates...) {
		addSeed(f, c.Encode(state))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := c.Decode(b)
		if err != nil {
			bad := checkBadInput(t, err)
			// Our idea of JSON syntax must be encoding/json's.
			if strings.HasPrefix(bad.Reason, "not JSON") && json.Valid(b) {
				t.Fatalf("%q is valid JSON, but: %v", b, err)
			}
			return
		}
		if !json.Valid(b) {
			t.Fatalf("accepted %q, which is not JSON", b)
		}
		checkDecoded(t, c, d)
		if want, ok := decodeJSONWithStdlib(t, b); !ok || want != d {
			t.Fatalf("%q decoded to %+v, encoding/json reads %+v (ok=%v)", b, d, want, ok)
		}
	})
}

// decodeJSONWithStdlib is an independent, slower reading of an accepted
// line: encoding/json for the syntax and the strings, strconv for numbers.
func decodeJSONWithStdlib(t *testing.T, b []byte) (document.Document, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	var d document.Document
	str := func(key string, dst *string) bool {
		raw, ok := m[key]
		return !ok || json.Unmarshal(raw, dst) == nil
	}
	num := func(key string, dst *uint64) bool {
		raw, ok := m[key]
		if !ok || string(raw) == "null" {
			return false // a missing time is bad input, not 0
		}
		s := string(raw)
		if strings.HasPrefix(s, `"`) {
			if json.Unmarshal(raw, &s) != nil {
				return false
			}
		}
		v, err := strconv.ParseUint(s, 10, 64)
		*dst = v
		return err == nil
	}
	ok := str("url", &d.URL) && str("text", &d.Text) && num("pubDate", &d.PubDate) && num("fetchTime", &d.FetchTime)
	return d, ok
}

func FuzzDecodeProtobuf(f *testing.F) {
	c := mustNew(f, "protobuf")
	for _, state := range append(emittedStates(), protoStates...) {
		addSeed(f, c.Encode(state))
		// The official encoding too: it writes first_fetch_time as well.
		b, err := proto.Marshal(toMessage(state))
		if err != nil {
			f.Fatal(err)
		}
		addSeed(f, b)
	}
	for _, tc := range goodProtobuf {
		addSeed(f, tc.in)
	}
	for _, tc := range badProtobuf {
		addSeed(f, tc.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := c.Decode(b)
		official := documentType().New().Interface()
		officialErr := proto.Unmarshal(b, official)
		if err != nil {
			bad := checkBadInput(t, err)
			// We refuse more than the official library only where we mean
			// to: wrong wire types of known fields, absent times (they have
			// explicit presence), and what the stores cannot keep (no url,
			// NUL characters).
			fields := official.ProtoReflect().Descriptor().Fields()
			absentTime := !official.ProtoReflect().Has(fields.ByNumber(2)) || !official.ProtoReflect().Has(fields.ByNumber(3))
			if officialErr == nil && !strings.Contains(bad.Reason, "wire type") && bad.Reason != "url: missing or empty" &&
				!strings.Contains(bad.Reason, "NUL character") && !(absentTime && strings.HasSuffix(bad.Reason, ": missing")) {
				t.Fatalf("%x: the official library accepts it, but: %v", b, err)
			}
			return
		}
		if officialErr != nil {
			t.Fatalf("accepted %x, which the official library refuses: %v", b, officialErr)
		}
		if want := update(fromMessage(official)); d != want {
			t.Fatalf("%x decoded to %+v, the official library reads %+v", b, d, want)
		}
		checkDecoded(t, c, d)
	})
}

// checkDecoded checks what holds for any decoded update: no FirstFetchTime,
// and Encode then Decode gives it back.
func checkDecoded(t *testing.T, c codec.Codec, d document.Document) {
	t.Helper()
	if d.URL == "" || d.FirstFetchTime != 0 {
		t.Fatalf("decoded %+v", d)
	}
	again, err := c.Decode(c.Encode(d))
	if err != nil {
		t.Fatalf("%+v encodes to %q, which does not decode: %v", d, c.Encode(d), err)
	}
	if again != d {
		t.Fatalf("%+v encodes to %q, which decodes to %+v", d, c.Encode(d), again)
	}
}
