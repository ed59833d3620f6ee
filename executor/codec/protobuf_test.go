package codec_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/docexec/docexec/executor/document"
)

// protoStates are states at the edges of the wire format.
var protoStates = []document.Document{
	{URL: "u"},
	{URL: "https://a.example/", PubDate: 1, FetchTime: 2, Text: "t", FirstFetchTime: 1},
	{URL: "https://max.example/", PubDate: maxUint64, FetchTime: maxUint64, Text: "max", FirstFetchTime: maxUint64},
	{URL: "https://ü.example/", PubDate: 1 << 63, FetchTime: 1<<63 + 1, Text: "héllo 世界 😀 \x01 \u2028", FirstFetchTime: 1<<53 + 1},
	{URL: "https://long.example/" + strings.Repeat("p", 300), PubDate: 127, FetchTime: 128, Text: strings.Repeat("long text ", 2000), FirstFetchTime: 128},
}

func TestDecodeProtobufReadsWhatTheOfficialLibraryWrites(t *testing.T) {
	c := mustNew(t, "protobuf")
	for _, state := range append(protoStates, emittedStates()...) {
		b, err := proto.Marshal(toMessage(state))
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Decode(b)
		if err != nil {
			t.Fatalf("decoding %+v: %v", state, err)
		}
		if want := update(state); got != want {
			t.Errorf("got %+v, want %+v", got, want)
		}
	}
}

func TestEncodeProtobufWritesWhatTheOfficialLibraryReads(t *testing.T) {
	c := mustNew(t, "protobuf")
	for _, state := range append(protoStates, emittedStates()...) {
		b := c.Encode(state)
		m := documentType().New().Interface()
		if err := proto.Unmarshal(b, m); err != nil {
			t.Fatalf("unmarshalling %+v: %v", state, err)
		}
		if got := fromMessage(m); got != state {
			t.Errorf("got %+v, want %+v", got, state)
		}
		if len(m.ProtoReflect().GetUnknown()) != 0 {
			t.Errorf("%+v: unknown fields %x", state, m.ProtoReflect().GetUnknown())
		}
		// Same bytes as the official library: the times have explicit
		// presence (proto3 optional), so even 0 is written; fields go in
		// number order.
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(toMessage(state))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != string(want) {
			t.Errorf("%+v: wrote %x, official %x", state, b, want)
		}
	}
}

func TestProtobufRoundTripsEveryEmittedState(t *testing.T) {
	c := mustNew(t, "protobuf")
	for _, state := range append(protoStates, emittedStates()...) {
		got, err := c.Decode(c.Encode(state))
		if err != nil {
			t.Fatal(err)
		}
		if want := update(state); got != want {
			t.Errorf("got %+v, want %+v", got, want)
		}
	}
}

func TestEncodeProtobufMendsInvalidUTF8(t *testing.T) {
	c := mustNew(t, "protobuf")
	b := c.Encode(document.Document{URL: "u\xff", Text: "a\xc3(b"})
	m := documentType().New().Interface()
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatalf("the official library refuses it: %v", err)
	}
	if got := fromMessage(m); got.URL != "u\uFFFD" || got.Text != "a\uFFFD(b" {
		t.Errorf("got %+v", got)
	}
}

// wire builds a message field by field.
type wire []byte

func (w wire) str(num protowire.Number, s string) wire {
	return protowire.AppendString(protowire.AppendTag(w, num, protowire.BytesType), s)
}

func (w wire) varint(num protowire.Number, v uint64) wire {
	return protowire.AppendVarint(protowire.AppendTag(w, num, protowire.VarintType), v)
}

func (w wire) fixed32(num protowire.Number, v uint32) wire {
	return protowire.AppendFixed32(protowire.AppendTag(w, num, protowire.Fixed32Type), v)
}

func (w wire) fixed64(num protowire.Number, v uint64) wire {
	return protowire.AppendFixed64(protowire.AppendTag(w, num, protowire.Fixed64Type), v)
}

func (w wire) raw(b ...byte) wire { return append(w, b...) }

var goodProtobuf = []struct {
	name string
	in   wire
	want document.Document
}{
	{"all four input fields are read", wire{}.str(1, "u").varint(2, 1).varint(3, 2).str(4, "t"), docOf("u", 1, 2, "t")},
	{"fields may come in any order", wire{}.str(4, "t").varint(3, 2).varint(2, 1).str(1, "u"), docOf("u", 1, 2, "t")},
	{"the last of a repeated field wins", wire{}.str(1, "a").varint(3, 9).varint(2, 1).str(1, "u").varint(3, 2).str(4, "x").str(4, "t"), docOf("u", 1, 2, "t")},
	{"zero times written explicitly are present", wire{}.str(1, "u").varint(2, 0).varint(3, 0).str(4, ""), docOf("u", 0, 0, "")},
	{"an absent text is empty", wire{}.str(1, "u").varint(2, 1).varint(3, 2), docOf("u", 1, 2, "")},
	{"the uint64 maximum is exact", wire{}.str(1, "u").varint(2, maxUint64).varint(3, maxUint64), docOf("u", maxUint64, maxUint64, "")},
	{"a varint that is longer than it need be is accepted", wire{}.str(1, "u").varint(2, 1).raw(3<<3, 0x85, 0x80, 0x80, 0x00), docOf("u", 1, 5, "")},
	{"first_fetch_time is ignored", wire{}.str(1, "u").varint(2, 1).varint(3, 9).varint(5, 1), docOf("u", 1, 9, "")},
	{"first_fetch_time is ignored even with another wire type", wire{}.str(1, "u").varint(2, 1).varint(3, 2).str(5, "\xff"), docOf("u", 1, 2, "")},
	{"unknown fields of every wire type are skipped", wire{}.varint(6, 1).fixed32(7, 2).fixed64(8, 3).str(9, "\xff").raw(10<<3|3, 11<<3, 1, 10<<3|4).str(1, "u").varint(2, 1).varint(3, 2).varint(536870911, 5), docOf("u", 1, 2, "")},
}

func TestDecodeProtobufAcceptsGoodInput(t *testing.T) {
	c := mustNew(t, "protobuf")
	for _, tc := range goodProtobuf {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Decode(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

var badProtobuf = []struct {
	name   string
	in     wire
	reason string
}{
	{"an empty message has no url", wire{}, "url: missing or empty"},
	{"a missing fetch_time is not 0", wire{}.str(1, "u").varint(2, 1).str(4, "t"), "fetch_time: missing"},
	{"a missing pub_date is not 0", wire{}.str(1, "u").varint(3, 1).str(4, "t"), "pub_date: missing"},
	{"a NUL in the text cannot be stored", wire{}.str(1, "u").str(4, "a\x00b"), "text: contains a NUL character"},
	{"a message without field 1 has no url", wire{}.varint(3, 2).str(4, "t"), "url: missing or empty"},
	{"an empty url is missing", wire{}.str(1, "").varint(3, 2), "url: missing or empty"},
	{"a url sent as a varint is refused", wire{}.varint(1, 7), "url (field 1): wire type 0, want length-delimited"},
	{"a pub_date sent as bytes is refused", wire{}.str(1, "u").str(2, "1"), "pub_date (field 2): wire type 2, want varint"},
	{"a fetch_time sent as fixed64 is refused", wire{}.str(1, "u").fixed64(3, 1), "fetch_time (field 3): wire type 1, want varint"},
	{"a text sent as fixed32 is refused", wire{}.str(1, "u").fixed32(4, 1), "text (field 4): wire type 5"},
	{"a url that is not valid UTF-8 is refused", wire{}.str(1, "u\xff"), "url (field 1): not valid UTF-8"},
	{"a text that is not valid UTF-8 is refused, even if a later one is", wire{}.str(1, "u").str(4, "\xc3(").str(4, "t"), "text (field 4): not valid UTF-8"},
	{"a string longer than the message is refused", wire{}.raw(1<<3|2, 5, 'u'), "url (field 1)"},
	{"a truncated varint is refused", wire{}.str(1, "u").raw(3<<3, 0x80), "fetch_time (field 3)"},
	{"a varint longer than 64 bits is refused", wire{}.str(1, "u").raw(2<<3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02), "pub_date (field 2)"},
	{"a truncated tag is refused", wire{}.str(1, "u").raw(0x80), "not protobuf"},
	{"field number 0 is refused", wire{}.str(1, "u").raw(0<<3|0, 1), "not protobuf"},
	{"a field number above 2^29-1 is refused", wire{}.str(1, "u").varint(536870912, 1), "not protobuf"},
	{"the reserved wire type 6 is refused", wire{}.str(1, "u").raw(9<<3|6, 1), "not protobuf"},
	{"a stray end-group is refused", wire{}.str(1, "u").raw(9<<3 | 4), "not protobuf"},
	{"an unterminated group is refused", wire{}.str(1, "u").raw(9<<3|3, 1<<3|0, 1), "not protobuf"},
	{"a truncated unknown field is refused", wire{}.str(1, "u").raw(9<<3|1, 1, 2, 3), "not protobuf"},
	{"JSON is not protobuf", wire(`{"url":"u"}`), ""},
}

func TestDecodeProtobufRejectsBadInput(t *testing.T) {
	c := mustNew(t, "protobuf")
	for _, tc := range badProtobuf {
		t.Run(tc.name, func(t *testing.T) {
			d, err := c.Decode(tc.in)
			if err == nil {
				t.Fatalf("decoded %x to %+v", []byte(tc.in), d)
			}
			bad := checkBadInput(t, err)
			if !strings.Contains(bad.Reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", bad.Reason, tc.reason)
			}
		})
	}
}
