package codec

import (
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/docexec/docexec/executor/document"
)

// The protobuf format is coded by hand with protowire: the message is five
// fields, and generated code would bring a protoc step and reflection-driven
// unmarshalling for no gain. The tests check it against the official library.

type protobufCodec struct{}

func (protobufCodec) Name() string { return FormatProtobuf }

// Field numbers of the Document message (docs/architecture.md): the wire
// contract.
const (
	fieldURL            protowire.Number = 1
	fieldPubDate        protowire.Number = 2
	fieldFetchTime      protowire.Number = 3
	fieldText           protowire.Number = 4
	fieldFirstFetchTime protowire.Number = 5
)

var fieldNames = [...]string{
	fieldURL:            "url",
	fieldPubDate:        "pub_date",
	fieldFetchTime:      "fetch_time",
	fieldText:           "text",
	fieldFirstFetchTime: "first_fetch_time",
}

func (protobufCodec) Decode(b []byte) (document.Document, error) {
	var d document.Document
	// The strings are kept as slices of b until the end so that a field
	// repeated on the wire (the last one wins) costs no allocation.
	var url, text []byte
	var hasPubDate, hasFetchTime bool
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return document.Document{}, badInput("not protobuf: byte %d: %v", off, protowire.ParseError(n))
		}
		// The official library refuses these too; protowire leaves them to
		// its callers.
		if num > protowire.MaxValidNumber {
			return document.Document{}, badInput("not protobuf: byte %d: invalid field number %d", off, num)
		}
		off += n
		switch num {
		case fieldURL, fieldText:
			if typ != protowire.BytesType {
				return document.Document{}, wrongWireType(num, typ, "length-delimited")
			}
			v, n := protowire.ConsumeBytes(b[off:])
			if n < 0 {
				return document.Document{}, badInput("%s (field %d): %v", fieldNames[num], num, protowire.ParseError(n))
			}
			if !isUTF8(v) {
				return document.Document{}, badInput("%s (field %d): not valid UTF-8", fieldNames[num], num)
			}
			if num == fieldURL {
				url = v
			} else {
				text = v
			}
			off += n
		case fieldPubDate, fieldFetchTime:
			if typ != protowire.VarintType {
				return document.Document{}, wrongWireType(num, typ, "varint")
			}
			v, n := protowire.ConsumeVarint(b[off:])
			if n < 0 {
				return document.Document{}, badInput("%s (field %d): %v", fieldNames[num], num, protowire.ParseError(n))
			}
			if num == fieldPubDate {
				d.PubDate, hasPubDate = v, true
			} else {
				d.FetchTime, hasFetchTime = v, true
			}
			off += n
		default:
			// Unknown fields, and first_fetch_time: docexec computes that
			// itself, so whatever a producer sent in it is skipped unread.
			n := protowire.ConsumeFieldValue(num, typ, b[off:])
			if n < 0 {
				return document.Document{}, badInput("not protobuf: field %d: %v", num, protowire.ParseError(n))
			}
			off += n
		}
	}
	// One allocation for both strings.
	var both strings.Builder
	both.Grow(len(url) + len(text))
	both.Write(url)
	both.Write(text)
	s := both.String()
	d.URL, d.Text = s[:len(url)], s[len(url):]
	if err := storable(d); err != nil {
		return document.Document{}, err
	}
	// The times are `optional` (explicit presence): a missing one is not 0,
	// which would make the update its url's oldest version.
	switch {
	case !hasPubDate:
		return document.Document{}, badInput("%s: missing", fieldNames[fieldPubDate])
	case !hasFetchTime:
		return document.Document{}, badInput("%s: missing", fieldNames[fieldFetchTime])
	}
	return d, nil
}

// wrongWireType rejects a known field sent with another type. The official
// library would file it under unknown fields and carry on with a zero value;
// here that would silently turn, say, a fetch time into 0.
func wrongWireType(num protowire.Number, typ protowire.Type, want string) error {
	return badInput("%s (field %d): wire type %d, want %s", fieldNames[num], num, typ, want)
}

func (protobufCodec) Encode(d document.Document) []byte {
	url, text := validUTF8(d.URL), validUTF8(d.Text)
	size := 3 + protowire.SizeVarint(d.PubDate) + protowire.SizeVarint(d.FetchTime) + protowire.SizeVarint(d.FirstFetchTime)
	if url != "" {
		size += 1 + protowire.SizeBytes(len(url))
	}
	if text != "" {
		size += 1 + protowire.SizeBytes(len(text))
	}
	b := make([]byte, 0, size)
	// As the official library writes them: fields in number order, empty
	// strings left out, the optional times always written (even 0).
	if url != "" {
		b = protowire.AppendTag(b, fieldURL, protowire.BytesType)
		b = protowire.AppendString(b, url)
	}
	b = protowire.AppendTag(b, fieldPubDate, protowire.VarintType)
	b = protowire.AppendVarint(b, d.PubDate)
	b = protowire.AppendTag(b, fieldFetchTime, protowire.VarintType)
	b = protowire.AppendVarint(b, d.FetchTime)
	if text != "" {
		b = protowire.AppendTag(b, fieldText, protowire.BytesType)
		b = protowire.AppendString(b, text)
	}
	b = protowire.AppendTag(b, fieldFirstFetchTime, protowire.VarintType)
	b = protowire.AppendVarint(b, d.FirstFetchTime)
	return b
}

// validUTF8 mends invalid UTF-8, which proto3 forbids in strings and which
// Encode (unable to fail) must not pass on; decoded documents never hold any.
func validUTF8(s string) string {
	if isUTF8String(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
