package codec

import (
	"math/rand/v2"
	"testing"
	"unicode/utf8"
)

// TestUTF8CheckIsTheStandardLibrarys compares isUTF8 with utf8.Valid on
// every one-, two- and three-byte sequence and on the edges of four-byte
// ones (overlong forms, surrogates, past U+10FFFF, cut short), each placed
// at every offset of a block the vector code works in and after text in
// another script, and on random bytes.
func TestUTF8CheckIsTheStandardLibrarys(t *testing.T) {
	var seqs [][]byte
	for a := range 256 {
		seqs = append(seqs, []byte{byte(a)})
		for b := range 256 {
			seqs = append(seqs, []byte{byte(a), byte(b)})
		}
	}
	for a := 0xe0; a <= 0xef; a++ {
		for b := 0x70; b <= 0xc0; b++ {
			for _, c := range []byte{0x41, 0x7f, 0x80, 0xbf, 0xc0} {
				seqs = append(seqs, []byte{byte(a), byte(b), c})
			}
		}
	}
	for a := 0xf0; a <= 0xf8; a++ {
		for _, b := range []byte{0x7f, 0x80, 0x8f, 0x90, 0xbf, 0xc0} {
			seqs = append(seqs, []byte{byte(a), b, 0x80, 0x80}, []byte{byte(a), b, 0x80}, []byte{byte(a), b, 0x80, 0x41})
		}
	}
	prefix := []byte("Ünïcödé текст 中文字符 ")
	for _, seq := range seqs {
		for _, lead := range []int{0, 1, 15, 30, 31, 32, 33, 63, 64, 65} {
			for _, p := range [][]byte{[]byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab"), prefix} {
				for len(p) < lead {
					p = append(p, p...)
				}
				b := append(append(append([]byte{}, p[:lead]...), seq...), "tail"...)
				if got, want := isUTF8(b), utf8.Valid(b); got != want {
					t.Fatalf("isUTF8(%q) = %v, utf8.Valid says %v", b, got, want)
				}
				if got, want := isUTF8String(string(b)), utf8.Valid(b); got != want {
					t.Fatalf("isUTF8String(%q) = %v, utf8.Valid says %v", b, got, want)
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, r.IntN(200))
		for i := range b {
			b[i] = byte(r.IntN(256))
			if r.IntN(3) == 0 {
				b[i] = 0x80 | byte(r.IntN(64)) // continuation bytes, often right
			}
		}
		if got, want := isUTF8(b), utf8.Valid(b); got != want {
			t.Fatalf("isUTF8(%q) = %v, utf8.Valid says %v", b, got, want)
		}
	}
}
