package codec_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/docexec/docexec/executor/codec"
	"github.com/docexec/docexec/executor/document"
)

func TestNew(t *testing.T) {
	for _, c := range []struct {
		name, format, want string
	}{
		{"json is accepted", "json", "json"},
		{"an empty format means json, the default", "", "json"},
		{"protobuf is accepted", "protobuf", "protobuf"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := codec.New(c.format)
			if err != nil {
				t.Fatal(err)
			}
			if got.Name() != c.want {
				t.Errorf("Name() = %q, want %q", got.Name(), c.want)
			}
		})
	}
	for _, c := range []struct{ name, format string }{
		{"an unknown format is refused", "xml"},
		{"format names are case-sensitive", "JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := codec.New(c.format)
			if err == nil {
				t.Fatal("no error")
			}
			for _, accepted := range []string{`"json"`, `"protobuf"`, `"` + c.format + `"`} {
				if !strings.Contains(err.Error(), accepted) {
					t.Errorf("error %q does not mention %s", err, accepted)
				}
			}
		})
	}
}

func TestBadInputError(t *testing.T) {
	var err error = &codec.BadInputError{Reason: "url: missing or empty"}
	t.Run("it reads as bad input followed by the reason", func(t *testing.T) {
		if got, want := err.Error(), "bad input: url: missing or empty"; got != want {
			t.Errorf("Error() = %q, want %q", got, want)
		}
	})
	t.Run("errors.Is matches ErrBadInput, also when wrapped", func(t *testing.T) {
		if !errors.Is(err, codec.ErrBadInput) {
			t.Error("errors.Is(err, ErrBadInput) is false")
		}
		wrapped := errors.Join(errors.New("partition 3"), err)
		if !errors.Is(wrapped, codec.ErrBadInput) {
			t.Error("errors.Is(wrapped, ErrBadInput) is false")
		}
	})
	t.Run("other errors do not match ErrBadInput", func(t *testing.T) {
		if errors.Is(err, errors.New("bad input")) {
			t.Error("matched an unrelated error with the same text")
		}
	})
}

// mustNew is New for formats that exist.
func mustNew(t testing.TB, format string) codec.Codec {
	t.Helper()
	c, err := codec.New(format)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkBadInput fails unless err is a *BadInputError with a reason.
func checkBadInput(t testing.TB, err error) *codec.BadInputError {
	t.Helper()
	var bad *codec.BadInputError
	if !errors.As(err, &bad) {
		t.Fatalf("error %v (%T) is not a *BadInputError", err, err)
	}
	if !errors.Is(err, codec.ErrBadInput) {
		t.Fatalf("errors.Is(%v, ErrBadInput) is false", err)
	}
	if bad.Reason == "" {
		t.Fatal("empty reason")
	}
	return bad
}

// The Document message (docs/architecture.md), described to the official protobuf
// library at run time, so that the tests check our hand-written wire code
// against an implementation that owes nothing to it.
var documentType = sync.OnceValue(func() protoreflect.MessageType {
	field := func(name, jsonName string, num int32, typ descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{
			Name:     proto.String(name),
			JsonName: proto.String(jsonName),
			Number:   proto.Int32(num),
			Label:    descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
			Type:     typ.Enum(),
		}
	}
	// The times are `optional uint64` (explicit presence): proto3 keeps an
	// optional field in a synthetic oneof of its own.
	var oneofs []*descriptorpb.OneofDescriptorProto
	optional := func(f *descriptorpb.FieldDescriptorProto) *descriptorpb.FieldDescriptorProto {
		f.Proto3Optional = proto.Bool(true)
		f.OneofIndex = proto.Int32(int32(len(oneofs)))
		oneofs = append(oneofs, &descriptorpb.OneofDescriptorProto{Name: proto.String("_" + f.GetName())})
		return f
	}
	const str, u64 = descriptorpb.FieldDescriptorProto_TYPE_STRING, descriptorpb.FieldDescriptorProto_TYPE_UINT64
	file, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name:    proto.String("docexec/document.proto"),
		Package: proto.String("docexec"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Document"),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("url", "url", 1, str),
				optional(field("pub_date", "pubDate", 2, u64)),
				optional(field("fetch_time", "fetchTime", 3, u64)),
				field("text", "text", 4, str),
				optional(field("first_fetch_time", "firstFetchTime", 5, u64)),
			},
			OneofDecl: oneofs,
		}},
	}, nil)
	if err != nil {
		panic(err)
	}
	return dynamicpb.NewMessageType(file.Messages().ByName("Document"))
})

func toMessage(d document.Document) proto.Message {
	m := documentType().New()
	fields := m.Descriptor().Fields()
	m.Set(fields.ByNumber(1), protoreflect.ValueOfString(d.URL))
	m.Set(fields.ByNumber(2), protoreflect.ValueOfUint64(d.PubDate))
	m.Set(fields.ByNumber(3), protoreflect.ValueOfUint64(d.FetchTime))
	m.Set(fields.ByNumber(4), protoreflect.ValueOfString(d.Text))
	m.Set(fields.ByNumber(5), protoreflect.ValueOfUint64(d.FirstFetchTime))
	return m.Interface()
}

func fromMessage(msg proto.Message) document.Document {
	m := msg.ProtoReflect()
	fields := m.Descriptor().Fields()
	return document.Document{
		URL:            m.Get(fields.ByNumber(1)).String(),
		PubDate:        m.Get(fields.ByNumber(2)).Uint(),
		FetchTime:      m.Get(fields.ByNumber(3)).Uint(),
		Text:           m.Get(fields.ByNumber(4)).String(),
		FirstFetchTime: m.Get(fields.ByNumber(5)).Uint(),
	}
}

// update is what a decoder makes of a state: the state less FirstFetchTime.
func update(state document.Document) document.Document {
	state.FirstFetchTime = 0
	return state
}
