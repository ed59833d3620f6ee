package codec

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/docexec/docexec/executor/document"
)

// The JSON decoder is a hand-written scanner rather than encoding/json
// because it sits on the hot path and because encoding/json would get the
// contract subtly wrong: it matches keys case-insensitively, lets the last of
// duplicate keys win, and quietly turns invalid UTF-8 into U+FFFD, where a
// bad message must be rejected with a reason instead.

type jsonCodec struct{}

func (jsonCodec) Name() string { return FormatJSON }

// maxDepth bounds the nesting of objects and arrays (the top-level object
// counts), as encoding/json does, so that a hostile message cannot make the
// decoder hold a stack as long as the message.
const maxDepth = 10000

// The keys of the format. firstFetchTime needs no entry: on input it is as
// ignored as any unknown key.
const (
	keyURL = 1 << iota
	keyPubDate
	keyFetchTime
	keyText
)

func (jsonCodec) Decode(b []byte) (document.Document, error) {
	s := scanner{b: b}
	var d document.Document
	if err := s.object(&d); err != nil {
		return document.Document{}, err
	}
	// Syntax errors win over field errors: when the message is not JSON at
	// all, that is the more useful thing to say.
	if s.fieldErr != nil {
		return document.Document{}, s.fieldErr
	}
	if err := storable(d); err != nil {
		return document.Document{}, err
	}
	// A missing time is not 0: taking it for 0 would make the update the
	// oldest version of its url. A missing text is an empty page.
	for _, key := range [...]int{keyPubDate, keyFetchTime} {
		if s.present&key == 0 {
			return document.Document{}, badInput("%s: missing", keyName(key))
		}
	}
	return d, nil
}

// scanner reads one JSON text. Syntax errors are returned and stop it; field
// errors (valid JSON, bad document) are kept in fieldErr while it goes on to
// check the rest of the syntax.
type scanner struct {
	b        []byte
	i        int
	fieldErr error
	seen     int // keys read, null or not
	present  int // number keys read with a value other than null
}

func (s *scanner) syntaxErr(what string) error {
	if s.i >= len(s.b) {
		return badInput("not JSON: %s at end of input", what)
	}
	return badInput("not JSON: %s at byte %d (%s)", what, s.i, quoteByte(s.b[s.i]))
}

func (s *scanner) setFieldErr(format string, args ...any) {
	if s.fieldErr == nil {
		s.fieldErr = badInput(format, args...)
	}
}

func (s *scanner) skipSpace() {
	i := s.i
	for i < len(s.b) && (s.b[i] == ' ' || s.b[i] == '\t' || s.b[i] == '\n' || s.b[i] == '\r') {
		i++
	}
	s.i = i
}

// object reads the top-level object into d.
func (s *scanner) object(d *document.Document) error {
	s.skipSpace()
	if s.i >= len(s.b) {
		return badInput("not JSON: empty input")
	}
	if s.b[s.i] != '{' {
		start := s.i
		if err := s.skipValue(0); err != nil {
			return err
		}
		if err := s.end(); err != nil {
			return err
		}
		return badInput("not a JSON object (got %s)", s.describe(start, s.i))
	}
	s.i++
	s.skipSpace()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return s.end()
	}
	for {
		s.skipSpace()
		key, err := s.key()
		if err != nil {
			return err
		}
		s.skipSpace()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return s.syntaxErr("expected ':' after object key")
		}
		s.i++
		s.skipSpace()
		if key != 0 && s.seen&key != 0 {
			s.setFieldErr("%s: duplicate key", keyName(key))
			key = 0
		}
		s.seen |= key
		switch key {
		case keyURL:
			err = s.stringField("url", &d.URL)
		case keyText:
			err = s.stringField("text", &d.Text)
		case keyPubDate:
			err = s.uintField(keyPubDate, &d.PubDate)
		case keyFetchTime:
			err = s.uintField(keyFetchTime, &d.FetchTime)
		default:
			err = s.skipValue(1)
		}
		if err != nil {
			return err
		}
		s.skipSpace()
		if s.i >= len(s.b) {
			return s.syntaxErr("unterminated object")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return s.end()
		default:
			return s.syntaxErr("expected ',' or '}' after object value")
		}
	}
}

// end checks that nothing but white space follows the value.
func (s *scanner) end() error {
	s.skipSpace()
	if s.i < len(s.b) {
		return s.syntaxErr("unexpected data after the top-level value")
	}
	return nil
}

func keyName(key int) string {
	switch key {
	case keyURL:
		return "url"
	case keyPubDate:
		return "pubDate"
	case keyFetchTime:
		return "fetchTime"
	case keyText:
		return "text"
	}
	return "?"
}

// key reads an object key and says which field it names (0: one to ignore).
func (s *scanner) key() (int, error) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return 0, s.syntaxErr("expected a string as object key")
	}
	start, end, esc, err := s.scanString()
	if err != nil {
		return 0, err
	}
	raw := s.b[start:end]
	if esc {
		// Keys with escapes are rare enough to afford the copy. One that
		// does not unescape names no field of ours.
		key, _ := unescape(raw)
		raw = []byte(key)
	}
	switch string(raw) {
	case "url":
		return keyURL, nil
	case "pubDate":
		return keyPubDate, nil
	case "fetchTime":
		return keyFetchTime, nil
	case "text":
		return keyText, nil
	}
	return 0, nil
}

// stringField reads the url or the text: a string, or null for "".
func (s *scanner) stringField(name string, dst *string) error {
	if s.i >= len(s.b) {
		return s.syntaxErr("expected a value")
	}
	switch s.b[s.i] {
	case '"':
		start, end, esc, err := s.scanString()
		if err != nil {
			return err
		}
		raw := s.b[start:end]
		if !isUTF8(raw) {
			s.setFieldErr("%s: not valid UTF-8", name)
			return nil
		}
		if !esc {
			*dst = string(raw)
			return nil
		}
		v, ok := unescape(raw)
		if !ok {
			s.setFieldErr("%s: not valid UTF-8 (a \\u escape of a lone surrogate)", name)
			return nil
		}
		*dst = v
		return nil
	case 'n':
		if err := s.literal("null"); err != nil {
			return err
		}
		*dst = ""
		return nil
	}
	start := s.i
	if err := s.skipValue(1); err != nil {
		return err
	}
	s.setFieldErr("%s: %s is not a string", name, s.describe(start, s.i))
	return nil
}

// uintField reads pubDate or fetchTime: a JSON number or a string of decimal
// digits (as protojson writes 64-bit integers). null leaves it missing.
func (s *scanner) uintField(key int, dst *uint64) error {
	name := keyName(key)
	if s.i >= len(s.b) {
		return s.syntaxErr("expected a value")
	}
	start := s.i
	var digits []byte
	switch c := s.b[s.i]; {
	case c == '"':
		from, to, esc, err := s.scanString()
		if err != nil {
			return err
		}
		digits = s.b[from:to]
		if esc {
			v, _ := unescape(digits)
			digits = []byte(v)
		}
	case c == '-' || ('0' <= c && c <= '9'):
		plain, err := s.scanNumber()
		if err != nil {
			return err
		}
		if plain {
			digits = s.b[start:s.i]
		}
	case c == 'n':
		return s.literal("null")
	default:
		if err := s.skipValue(1); err != nil {
			return err
		}
	}
	v, ok := parseUint(digits)
	if !ok {
		s.setFieldErr("%s: %s is not an unsigned 64-bit integer", name, s.describe(start, s.i))
		return nil
	}
	*dst = v
	s.present |= key
	return nil
}

// parseUint parses a non-empty string of decimal digits, exactly: going
// through a float64 would merge neighbours above 2^53.
func parseUint(digits []byte) (uint64, bool) {
	if len(digits) == 0 {
		return 0, false
	}
	var v uint64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (^uint64(0)-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// skipValue checks the syntax of one value, found inside depth containers,
// and steps over it. It loops rather than recursing so that deep nesting
// cannot exhaust the goroutine's stack.
func (s *scanner) skipValue(depth int) error {
	var buf [32]byte
	stack := buf[:0] // the open containers, '{' or '['
	for {
		// A value is expected at s.i.
		s.skipSpace()
		if s.i >= len(s.b) {
			return s.syntaxErr("expected a value")
		}
		switch c := s.b[s.i]; {
		case c == '{' || c == '[':
			if depth+len(stack) >= maxDepth {
				return s.syntaxErr("nesting too deep")
			}
			s.i++
			s.skipSpace()
			if s.i < len(s.b) && s.b[s.i] == c+2 { // '}' == '{'+2, ']' == '['+2
				s.i++
				break
			}
			stack = append(stack, c)
			if c == '{' {
				if err := s.memberKey(); err != nil {
					return err
				}
			}
			continue
		case c == '"':
			if _, _, _, err := s.scanString(); err != nil {
				return err
			}
		case c == '-' || ('0' <= c && c <= '9'):
			if _, err := s.scanNumber(); err != nil {
				return err
			}
		case c == 't':
			if err := s.literal("true"); err != nil {
				return err
			}
		case c == 'f':
			if err := s.literal("false"); err != nil {
				return err
			}
		case c == 'n':
			if err := s.literal("null"); err != nil {
				return err
			}
		default:
			return s.syntaxErr("expected a value")
		}
		// A value is complete: close containers until one wants another
		// element.
		for {
			if len(stack) == 0 {
				return nil
			}
			s.skipSpace()
			if s.i >= len(s.b) {
				return s.syntaxErr("unterminated object or array")
			}
			open, c := stack[len(stack)-1], s.b[s.i]
			if c == ',' {
				s.i++
				if open == '{' {
					s.skipSpace()
					if err := s.memberKey(); err != nil {
						return err
					}
				}
				break
			}
			if c != open+2 {
				if open == '{' {
					return s.syntaxErr("expected ',' or '}' after object value")
				}
				return s.syntaxErr("expected ',' or ']' after array element")
			}
			s.i++
			stack = stack[:len(stack)-1]
		}
	}
}

// memberKey steps over `"key" :` inside an ignored object.
func (s *scanner) memberKey() error {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return s.syntaxErr("expected a string as object key")
	}
	if _, _, _, err := s.scanString(); err != nil {
		return err
	}
	s.skipSpace()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return s.syntaxErr("expected ':' after object key")
	}
	s.i++
	return nil
}

func (s *scanner) literal(lit string) error {
	if string(s.b[s.i:min(len(s.b), s.i+len(lit))]) != lit {
		return s.syntaxErr("invalid literal")
	}
	s.i += len(lit)
	return nil
}

// scanNumber steps over a number as JSON's grammar defines it and reports
// whether it is plain decimal digits (no sign, fraction or exponent).
func (s *scanner) scanNumber() (plain bool, err error) {
	// A local index keeps the loops in registers; this is the hot path.
	b, i := s.b, s.i
	plain = true
	if i < len(b) && b[i] == '-' {
		plain = false
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = skipDigits(b, i)
	default:
		s.i = i
		return false, s.syntaxErr("invalid number")
	}
	if i < len(b) && b[i] == '.' {
		plain = false
		i++
		if i >= len(b) || !isDigit(b[i]) {
			s.i = i
			return false, s.syntaxErr("invalid number")
		}
		i = skipDigits(b, i)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		plain = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			s.i = i
			return false, s.syntaxErr("invalid number")
		}
		i = skipDigits(b, i)
	}
	s.i = i
	return plain, nil
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	return i
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// plainString marks the bytes that stand for themselves inside a JSON
// string; the rest (quote, backslash, control characters) end the fast path.
// Bytes of multi-byte UTF-8 sequences are plain here: only the url and the
// text, which the document keeps, are checked for valid UTF-8.
var plainString = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// Texts can be long, so the plain runs are skipped eight bytes at a time
// (SWAR: SIMD within a register), then byte by byte up to the stop.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// hasByte reports whether a byte of w is c.
func hasByte(w uint64, c byte) bool {
	x := w ^ ones*uint64(c)
	return (x-ones)&^x&highs != 0
}

// hasBelow reports whether a byte of w is below c (c <= 0x80).
func hasBelow(w uint64, c byte) bool {
	return (w-ones*uint64(c))&^w&highs != 0
}

// skipPlain returns the index of the first byte from i on that is not
// plainString (len(b) if none).
func skipPlain(b []byte, i int) int {
	for ; i+8 <= len(b); i += 8 {
		// One 64-bit load: a generic version over strings too, reading the
		// eight bytes one by one, made this loop a third slower.
		if w := binary.LittleEndian.Uint64(b[i:]); hasByte(w, '"') || hasByte(w, '\\') || hasBelow(w, 0x20) {
			break
		}
	}
	for i < len(b) && plainString[b[i]] {
		i++
	}
	return i
}

// skipPlainString is skipPlain of a string, which it only reads.
func skipPlainString(s string, i int) int {
	return skipPlain(unsafe.Slice(unsafe.StringData(s), len(s)), i)
}

// scanString steps over the string starting at s.i and returns the bounds of
// its contents and whether they hold escapes.
func (s *scanner) scanString() (start, end int, esc bool, err error) {
	b, i := s.b, s.i+1
	start = i
	for {
		i = skipPlain(b, i)
		if i >= len(b) {
			s.i = i
			return 0, 0, false, s.syntaxErr("unterminated string")
		}
		switch b[i] {
		case '"':
			s.i = i + 1
			return start, i, esc, nil
		case '\\':
			esc = true
			i++
			if i >= len(b) {
				s.i = i
				return 0, 0, false, s.syntaxErr("unterminated string")
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				i++
				for range 4 {
					if i >= len(b) || unhex(b[i]) < 0 {
						s.i = i
						return 0, 0, false, s.syntaxErr(`invalid \u escape`)
					}
					i++
				}
			default:
				s.i = i
				return 0, 0, false, s.syntaxErr("invalid escape")
			}
		default:
			s.i = i
			return 0, 0, false, s.syntaxErr("control character in string")
		}
	}
}

func unhex(c byte) rune {
	switch {
	case '0' <= c && c <= '9':
		return rune(c - '0')
	case 'a' <= c && c <= 'f':
		return rune(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

// unescape decodes the contents of a string that scanString accepted. It
// reports false for a \u escape of a lone surrogate, which no UTF-8 string
// can hold: rejecting it beats storing a U+FFFD the producer never wrote.
//
// Since escapes only ever produce valid UTF-8 and never continue a sequence
// begun before them, the result is valid UTF-8 exactly when raw is.
func unescape(raw []byte) (string, bool) {
	var out strings.Builder
	out.Grow(len(raw)) // escapes only shrink: one allocation, no copy
	for {
		k := bytes.IndexByte(raw, '\\')
		if k < 0 {
			out.Write(raw)
			return out.String(), true
		}
		out.Write(raw[:k])
		c := raw[k+1]
		raw = raw[k+2:]
		switch c {
		case 'b':
			out.WriteByte('\b')
		case 'f':
			out.WriteByte('\f')
		case 'n':
			out.WriteByte('\n')
		case 'r':
			out.WriteByte('\r')
		case 't':
			out.WriteByte('\t')
		case 'u':
			r := hex4(raw)
			raw = raw[4:]
			if utf16.IsSurrogate(r) {
				// Only a high surrogate followed by a \u escape of a low one
				// makes a character.
				if r >= 0xdc00 || len(raw) < 6 || raw[0] != '\\' || raw[1] != 'u' {
					return "", false
				}
				if r = utf16.DecodeRune(r, hex4(raw[2:])); r == utf8.RuneError {
					return "", false
				}
				raw = raw[6:]
			}
			out.WriteRune(r)
		default: // '"', '\\', '/'
			out.WriteByte(c)
		}
	}
}

func hex4(b []byte) rune {
	return unhex(b[0])<<12 | unhex(b[1])<<8 | unhex(b[2])<<4 | unhex(b[3])
}

// describe renders the value b[start:end] for a reason: short, and never so
// long that a huge message bloats the dead-letter header.
func (s *scanner) describe(start, end int) string {
	switch s.b[start] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	const limit = 40
	v := s.b[start:end]
	if len(v) <= limit {
		return strings.ToValidUTF8(string(v), "\uFFFD")
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return strings.ToValidUTF8(string(v[:cut]), "\uFFFD") + "…"
}

func quoteByte(c byte) string {
	if c < utf8.RuneSelf {
		return strconv.QuoteRune(rune(c))
	}
	return "0x" + strconv.FormatUint(uint64(c), 16)
}

func (jsonCodec) Encode(d document.Document) []byte {
	// Room for the keys, the numbers and a few escapes, so that one
	// allocation is the rule.
	b := make([]byte, 0, len(d.URL)+len(d.Text)+len(d.Text)/16+160)
	b = append(b, `{"url":`...)
	b = AppendJSONString(b, d.URL)
	b = append(b, `,"pubDate":`...)
	b = strconv.AppendUint(b, d.PubDate, 10)
	b = append(b, `,"fetchTime":`...)
	b = strconv.AppendUint(b, d.FetchTime, 10)
	b = append(b, `,"text":`...)
	b = AppendJSONString(b, d.Text)
	b = append(b, `,"firstFetchTime":`...)
	b = strconv.AppendUint(b, d.FirstFetchTime, 10)
	return append(b, '}')
}

// jsonEscapes holds how each byte that ends skipPlain is written inside a
// JSON string. Only what JSON requires is escaped: the quote, the backslash
// and control characters. Everything else, U+2028 and U+2029 included (valid
// JSON since RFC 7159, valid JavaScript since ES2019), goes out raw, so a
// text is as long on the wire as in the state.
var jsonEscapes = func() (t ['\\' + 1]string) {
	const hexDigits = "0123456789abcdef"
	for c := range 0x20 {
		t[c] = `\u00` + string(hexDigits[c>>4]) + string(hexDigits[c&0xf])
	}
	t['\n'], t['\r'], t['\t'] = `\n`, `\r`, `\t`
	t['"'], t['\\'] = `\"`, `\\`
	return t
}()

// AppendJSONString appends s as a JSON string, as Encode writes a url and a
// text; what writes JSON for docexec to read (the test-data generator) uses
// it to escape alike. Decoded documents hold valid UTF-8, but Encode cannot
// fail, so invalid bytes become U+FFFD to keep the output valid JSON whatever
// it is given.
func AppendJSONString(b []byte, s string) []byte {
	if !isUTF8String(s) { // a fast check: valid input is the rule
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	b = append(b, '"')
	start := 0
	for i := skipPlainString(s, 0); i < len(s); i = skipPlainString(s, start) {
		b = append(b, s[start:i]...)
		b = append(b, jsonEscapes[s[i]]...)
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// JSONStringLen is the length of s as AppendJSONString writes it, less the
// two quotes: what a text weighs on the wire, counted without writing it.
func JSONStringLen(s string) int {
	if !isUTF8String(s) { // a fast check: valid input is the rule
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	n := len(s)
	for i := skipPlainString(s, 0); i < len(s); i = skipPlainString(s, i+1) {
		n += len(jsonEscapes[s[i]]) - 1
	}
	return n
}
