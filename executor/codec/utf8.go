package codec

import (
	"unsafe"

	asmutf8 "github.com/segmentio/asm/utf8"
)

// Every url and text is checked for valid UTF-8 when decoded and again
// when encoded, so the check runs over nearly every byte the executor
// handles. unicode/utf8 goes rune by rune outside ASCII: about 1 GB/s on
// web pages in every script, the largest single cost of an executor moving
// them. segmentio/asm checks 32 bytes per AVX2 instruction where the CPU
// has it (about 12 GB/s; the standard library's way elsewhere) and answers
// exactly as utf8.Valid does (TestUTF8CheckIsTheStandardLibrarys).

// isUTF8 reports whether b is valid UTF-8, as utf8.Valid.
func isUTF8(b []byte) bool { return asmutf8.Valid(b) }

// isUTF8String reports whether s is valid UTF-8, as utf8.ValidString. The
// check only reads the bytes it is given.
func isUTF8String(s string) bool {
	return asmutf8.Valid(unsafe.Slice(unsafe.StringData(s), len(s)))
}
