// Package cli is what docexec's commands (manager, executor, local) share
// on their command line: exit codes, usage errors and the structured
// logger.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/docexec/docexec/internal/redact"
)

// Exit codes of every command.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2 // the command line or the configuration is wrong
)

// Usage reports a command line that does not parse and returns ExitUsage.
// After -h (flag.ErrHelp) the usage was printed, and there is nothing more
// to say.
func Usage(stderr io.Writer, command string, err error) int {
	if !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stderr, "docexec %s: %v\n", command, err)
	}
	return ExitUsage
}

// NewLogger returns the structured logger of a log format (json, or text),
// which masks secrets wherever they appear (errors of libraries quote what
// they were given).
func NewLogger(w io.Writer, format string, secrets ...string) *slog.Logger {
	var h slog.Handler = slog.NewJSONHandler(w, nil)
	if format == "text" {
		h = slog.NewTextHandler(w, nil)
	}
	return slog.New(redact.New(secrets...).Handler(h))
}
