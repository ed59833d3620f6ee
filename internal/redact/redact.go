// Package redact keeps secrets out of logs and error messages. Libraries
// put what they were given into their errors — pgx quotes a DSN that does
// not parse, url.Parse quotes the whole URL — and redacting by pattern
// misses spellings (`password = x`, quoted values with escapes, an '@'
// inside a URL password). So a Redactor is told the secrets themselves and
// replaces every occurrence, and DSN lists every way a PostgreSQL DSN can
// spell its password.
package redact

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Mask replaces a secret.
const Mask = "xxxxx"

// Redactor replaces known secrets in text. The zero value and nil redact
// nothing.
type Redactor struct {
	replacer *strings.Replacer
}

// New returns a Redactor of secrets; empty ones are ignored. Each is also
// masked as Go's %q would print it (errors often quote what they refuse).
func New(secrets ...string) *Redactor {
	var uniq []string
	seen := map[string]bool{}
	for _, s := range secrets {
		quoted := strconv.Quote(s)
		for _, spelling := range []string{s, quoted[1 : len(quoted)-1]} {
			if spelling != "" && !seen[spelling] {
				seen[spelling] = true
				uniq = append(uniq, spelling)
			}
		}
	}
	if len(uniq) == 0 {
		return &Redactor{}
	}
	// The replacer tries its pairs in order at each position: the longest
	// secret first, so that a DSN is masked whole rather than around the
	// password inside it.
	sort.Slice(uniq, func(i, j int) bool { return len(uniq[i]) > len(uniq[j]) })
	pairs := make([]string, 0, 2*len(uniq))
	for _, s := range uniq {
		pairs = append(pairs, s, Mask)
	}
	return &Redactor{replacer: strings.NewReplacer(pairs...)}
}

// String returns s with every secret masked.
func (r *Redactor) String(s string) string {
	if r == nil || r.replacer == nil {
		return s
	}
	return r.replacer.Replace(s)
}

// Error returns err with a message whose secrets are masked; errors.Is and
// errors.As still see the original chain.
func (r *Redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	msg := r.String(err.Error())
	if msg == err.Error() {
		return err
	}
	return &redacted{msg: msg, err: err}
}

type redacted struct {
	msg string
	err error
}

func (e *redacted) Error() string { return e.msg }
func (e *redacted) Unwrap() error { return e.err }

// Handler wraps h so that messages and attribute values reach it with
// their secrets masked.
func (r *Redactor) Handler(h slog.Handler) slog.Handler {
	return &handler{next: h, r: r}
}

type handler struct {
	next slog.Handler
	r    *Redactor
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	masked := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		masked[i] = h.attr(a)
	}
	return &handler{next: h.next.WithAttrs(masked), r: h.r}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name), r: h.r}
}

func (h *handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.String(v.String()))
	case slog.KindGroup:
		group := v.Group()
		masked := make([]any, len(group))
		for i, g := range group {
			masked[i] = h.attr(g)
		}
		return slog.Group(a.Key, masked...)
	case slog.KindAny:
		// Errors, Stringers, slices: judged by how they print.
		text := fmt.Sprint(v.Any())
		if masked := h.r.String(text); masked != text {
			return slog.String(a.Key, masked)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// DSN returns the secrets of a PostgreSQL DSN: the DSN itself and its
// password as libpq and pgx read it, in every spelling it can have there
// (raw, percent-decoded, quoted, unescaped). It never fails: a DSN that
// does not parse is still masked whole.
func DSN(dsn string) []string {
	out := []string{dsn}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return append(out, urlPasswords(dsn)...)
	}
	return append(out, keywordPasswords(dsn)...)
}

// urlPasswords reads postgres://user:password@host/db?password=... leniently:
// a password may hold an unescaped '@', '/' or ':' that url.Parse would
// refuse or split elsewhere.
func urlPasswords(dsn string) []string {
	var out []string
	add := func(raw string) {
		out = append(out, raw)
		if v, err := url.PathUnescape(raw); err == nil {
			out = append(out, v)
		}
		if v, err := url.QueryUnescape(raw); err == nil {
			out = append(out, v)
		}
	}
	rest := dsn[strings.Index(dsn, "://")+3:]
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		userinfo := rest[:at]
		if colon := strings.Index(userinfo, ":"); colon >= 0 {
			add(userinfo[colon+1:])
		}
	}
	if u, err := url.Parse(dsn); err == nil {
		if p, ok := u.User.Password(); ok {
			out = append(out, p)
		}
	}
	for _, param := range strings.FieldsFunc(dsn[strings.Index(dsn, "://")+3:], func(r rune) bool { return r == '?' || r == '&' }) {
		key, value, _ := strings.Cut(param, "=")
		if k, err := url.QueryUnescape(key); err == nil && k == "password" { // pgx decodes the key too
			add(value)
		}
	}
	return out
}

// keywordPasswords reads `host=h password = 'it\'s' dbname=d` as libpq
// does: white space around '=', values bare (backslash escapes) or single
// quoted (backslash escapes ' and \).
func keywordPasswords(dsn string) []string {
	var out []string
	s := dsn
	for {
		s = strings.TrimLeft(s, " \t\n\r\v\f")
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return out
		}
		key := strings.TrimSpace(s[:eq])
		s = strings.TrimLeft(s[eq+1:], " \t\n\r\v\f")
		raw, value, rest := keywordValue(s)
		if key == "password" {
			out = append(out, raw, value)
		}
		s = rest
	}
}

// keywordValue splits the value at the start of s from what follows,
// returning it as written and as meant.
func keywordValue(s string) (raw, value, rest string) {
	var b strings.Builder
	if strings.HasPrefix(s, "'") {
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				if i+1 < len(s) {
					i++
					b.WriteByte(s[i])
				}
			case '\'':
				return s[:i+1], b.String(), s[i+1:]
			default:
				b.WriteByte(s[i])
			}
		}
		return s, b.String(), "" // unterminated: all of it
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f':
			return s[:i], b.String(), s[i:]
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(c)
		}
	}
	return s, b.String(), ""
}
