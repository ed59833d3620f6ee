// Package redacttest holds the PostgreSQL DSN spellings that tests of
// secret handling share: every way libpq and pgx let a DSN hold a password.
package redacttest

import "strings"

// Marker is part of every password below: a text that holds it shows (a
// piece of) a password.
const Marker = "s3cr3t"

// DSN is a DSN and the spellings of its password that must never be
// printed.
type DSN struct {
	Name      string
	DSN       string
	Spellings []string // as written and as meant
}

// DSNs returns the spellings with host:port in each DSN (for example a
// port where nothing listens).
func DSNs(hostPort string) []DSN {
	host, port, _ := strings.Cut(hostPort, ":")
	r := strings.NewReplacer("HOSTPORT", hostPort, "HOST", host, "PORT", port)
	cases := []DSN{
		{"a URL password", "postgres://docexec:Url-s3cr3t@HOSTPORT/docs?sslmode=disable", []string{"Url-s3cr3t"}},
		{"a URL password with an escaped @ and /", "postgresql://docexec:p%40s3cr3t%2Fw0rd@HOSTPORT/docs?sslmode=disable", []string{"p%40s3cr3t%2Fw0rd", "p@s3cr3t/w0rd"}},
		{"a URL password with a raw @ inside", "postgres://docexec:raw@s3cr3t@HOSTPORT/docs?sslmode=disable", []string{"raw@s3cr3t"}},
		{"a URL password in the query", "postgres://HOSTPORT/docs?sslmode=disable&password=Qu3ry%21s3cr3t", []string{"Qu3ry%21s3cr3t", "Qu3ry!s3cr3t"}},
		{"a URL password in the query under an escaped key", "postgres://HOSTPORT/docs?sslmode=disable&pass%77ord=K3y-s3cr3t", []string{"K3y-s3cr3t"}},
		{"a URL whose port does not parse", "postgres://docexec:Unp4rsable-s3cr3t@HOST:notaport/docs", []string{"Unp4rsable-s3cr3t"}},
		{"a keyword password", "host=HOST port=PORT user=docexec password=Kw-s3cr3t dbname=docs sslmode=disable", []string{"Kw-s3cr3t"}},
		{"a keyword password with spaces around =", "host=HOST port=PORT password = Sp4ced-s3cr3t dbname=docs sslmode=disable", []string{"Sp4ced-s3cr3t"}},
		{"a quoted keyword password with escapes", `host=HOST port=PORT password='it\'s a \\ s3cr3t' dbname=docs sslmode=disable`, []string{`'it\'s a \\ s3cr3t'`, `it's a \ s3cr3t`}},
		{"a bare keyword password with an escaped space", `host=HOST port=PORT password=bare\ s3cr3t dbname=docs sslmode=disable`, []string{`bare\ s3cr3t`, `bare s3cr3t`}},
		{"an unterminated quoted password", `host=HOST port=PORT password='unterminated s3cr3t`, []string{`unterminated s3cr3t`}},
	}
	for i := range cases {
		cases[i].DSN = r.Replace(cases[i].DSN)
	}
	return cases
}
