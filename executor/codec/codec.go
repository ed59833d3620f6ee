// Package codec holds the wire formats (docs/architecture.md): how the bytes
// of a Kafka message become a document.Document and how a state goes back to
// bytes.
//
// It exists so that every part of docexec (the executor, local mode, the
// tests) reads and writes documents the same way, with one definition of bad
// input: a message that any decoder here rejects goes to the dead-letter topic
// with the rejection's reason, and one that it accepts carries exact uint64
// values (never rounded through a float64 or a signed integer).
package codec

import (
	"errors"
	"fmt"
	"strings"

	"github.com/docexec/docexec/executor/document"
)

// Codec turns bytes of one wire format into documents and back.
//
// Implementations are stateless and safe for concurrent use.
type Codec interface {
	// Decode reads one input update. FirstFetchTime on input is ignored
	// (left 0). Every error it returns is a *BadInputError: decoding has no
	// other way to fail, so the caller can dead-letter on any error.
	Decode(b []byte) (document.Document, error)
	// Encode writes a state (all five fields).
	Encode(d document.Document) []byte
	// Name is the format's name as New accepts it.
	Name() string
}

// Format names accepted by New.
const (
	FormatJSON     = "json"
	FormatProtobuf = "protobuf"
)

// New returns the codec of a format: "json" (also "", the default) or
// "protobuf".
func New(format string) (Codec, error) {
	switch format {
	case FormatJSON, "":
		return jsonCodec{}, nil
	case FormatProtobuf:
		return protobufCodec{}, nil
	}
	return nil, fmt.Errorf("codec: unknown format %q (accepted: %q, %q)", format, FormatJSON, FormatProtobuf)
}

// ErrBadInput matches (with errors.Is) every decoding error: the message is
// bad, not the executor, so it must be dead-lettered rather than retried.
var ErrBadInput = errors.New("bad input")

// BadInputError says why a message was rejected. Reason is short and meant
// for people (it becomes the dead-letter header), for instance
// `fetchTime: "-1" is not an unsigned 64-bit integer` or `url: missing or empty`.
type BadInputError struct{ Reason string }

func (e *BadInputError) Error() string { return "bad input: " + e.Reason }

// Is makes errors.Is(err, ErrBadInput) hold.
func (e *BadInputError) Is(target error) bool { return target == ErrBadInput }

func badInput(format string, args ...any) error {
	return &BadInputError{Reason: fmt.Sprintf(format, args...)}
}

// storable rejects documents the stores cannot keep: one without a url, or
// with a NUL character, which PostgreSQL text refuses (a sync batch holding
// one would fail on every retry).
func storable(d document.Document) error {
	switch {
	case d.URL == "":
		return badInput("url: missing or empty")
	case strings.IndexByte(d.URL, 0) >= 0:
		return badInput("url: contains a NUL character, which PostgreSQL cannot store")
	case strings.IndexByte(d.Text, 0) >= 0:
		return badInput("text: contains a NUL character, which PostgreSQL cannot store")
	}
	return nil
}
