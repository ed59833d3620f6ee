package kafka

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// AppendMessages appends msgs to b in a compact binary form that
// DecodeMessages reads back: what a batch will publish, kept (in Redis) until
// Kafka committed it, so that a new leader publishes exactly that.
func AppendMessages(b []byte, msgs []Message) []byte {
	// Grown once: a batch of web pages is megabytes, and growing by
	// doubling would allocate it about twice over.
	size := binary.MaxVarintLen64
	for _, m := range msgs {
		size += len(m.Topic) + len(m.Key) + len(m.Value) + 5*binary.MaxVarintLen64
		for _, h := range m.Headers {
			size += len(h.Key) + len(h.Value) + 2*binary.MaxVarintLen64
		}
	}
	b = slices.Grow(b, size)
	b = binary.AppendUvarint(b, uint64(len(msgs)))
	for _, m := range msgs {
		b = appendBytes(b, []byte(m.Topic))
		b = binary.AppendVarint(b, int64(m.Partition))
		b = appendBytes(b, m.Key)
		b = appendBytes(b, m.Value)
		b = binary.AppendUvarint(b, uint64(len(m.Headers)))
		for _, h := range m.Headers {
			b = appendBytes(b, h.Key)
			b = appendBytes(b, h.Value)
		}
	}
	return b
}

// appendBytes writes a length (+1, so that nil and empty stay apart) and
// the bytes.
func appendBytes(b, v []byte) []byte {
	if v == nil {
		return binary.AppendUvarint(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(v))+1)
	return append(b, v...)
}

// errCorrupt says that encoded messages do not decode.
var errCorrupt = errors.New("kafka: encoded messages are corrupt")

// DecodeMessages reads what AppendMessages wrote at the start of b and
// returns the messages and the rest of b.
func DecodeMessages(b []byte) ([]Message, []byte, error) {
	d := decoder{b: b}
	n := d.uvarint()
	if d.err != nil || n > uint64(len(b)) {
		return nil, nil, fmt.Errorf("%w: message count", errCorrupt)
	}
	msgs := make([]Message, n)
	for i := range msgs {
		m := &msgs[i]
		m.Topic = string(d.bytes())
		m.Partition = int32(d.varint())
		m.Key, m.Value = d.bytes(), d.bytes()
		if h := d.uvarint(); h > 0 && h <= uint64(len(d.b)) {
			m.Headers = make([]Header, h)
			for j := range m.Headers {
				m.Headers[j] = Header{Key: d.bytes(), Value: d.bytes()}
			}
		}
		if d.err != nil {
			return nil, nil, fmt.Errorf("%w: message %d", errCorrupt, i)
		}
	}
	return msgs, d.b, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

// varint reads a zig-zag signed varint: the unsigned one, decoded as
// binary.Varint does.
func (d *decoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n == 0 {
		return nil
	}
	if n-1 > uint64(len(d.b)) {
		d.err = errCorrupt
		return nil
	}
	v := d.b[: n-1 : n-1]
	d.b = d.b[n-1:]
	return v
}
