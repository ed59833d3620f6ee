package redact_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/docexec/docexec/internal/redact"
	"github.com/docexec/docexec/internal/redact/redacttest"
)

func TestDSNListsEverySpellingOfThePassword(t *testing.T) {
	for _, tc := range redacttest.DSNs("db.example:5432") {
		t.Run(tc.Name, func(t *testing.T) {
			r := redact.New(redact.DSN(tc.DSN)...)
			for _, s := range tc.Spellings {
				// The password alone, and inside the kind of sentence a
				// library writes around it.
				for _, text := range []string{s, "cannot parse `x:" + s + "@y`: invalid port", fmt.Sprintf("password=%q", s)} {
					if got := r.String(text); strings.Contains(got, redacttest.Marker) {
						t.Errorf("%q kept the secret %q", got, s)
					}
				}
			}
			if got := r.String("error in " + tc.DSN + "!"); got != "error in "+redact.Mask+"!" {
				t.Errorf("the DSN itself became %q", got)
			}
		})
	}
}

func TestRedactorErrorMasksTheMessageAndKeepsTheChain(t *testing.T) {
	cause := errors.New("root cause")
	err := fmt.Errorf("connect with hunter2: %w", cause)
	got := redact.New("hunter2").Error(err)
	if got.Error() != "connect with "+redact.Mask+": root cause" {
		t.Errorf("message %q", got.Error())
	}
	if !errors.Is(got, cause) {
		t.Error("errors.Is lost the cause")
	}
	if redact.New("absent").Error(err) != err {
		t.Error("an error without secrets should come back as it was")
	}
	if redact.New("x").Error(nil) != nil {
		t.Error("nil became an error")
	}
}

func TestHandlerMasksMessagesAndAttributes(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(redact.New("hunter2").Handler(slog.NewJSONHandler(&buf, nil)))
	log = log.With("dsn", "postgres://u:hunter2@h/db")
	log.WithGroup("g").Error("Failed with hunter2",
		"err", errors.New("auth hunter2 refused"),
		"list", []string{"a", "hunter2"},
		"nested", slog.GroupValue(slog.String("pw", "hunter2"), slog.Int("n", 1)),
		"count", 3)
	out := buf.String()
	if strings.Contains(out, "hunter2") {
		t.Fatalf("the secret reached the log: %s", out)
	}
	for _, want := range []string{`"msg":"Failed with xxxxx"`, `"dsn":"postgres://u:xxxxx@h/db"`, `"err":"auth xxxxx refused"`, `"count":3`, `"n":1`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s: %s", want, out)
		}
	}
}

func TestEmptySecretsMaskNothing(t *testing.T) {
	r := redact.New("", "")
	if got := r.String("nothing to hide"); got != "nothing to hide" {
		t.Errorf("got %q", got)
	}
	var none *redact.Redactor
	if got := none.String("x"); got != "x" {
		t.Errorf("nil redactor: %q", got)
	}
}
