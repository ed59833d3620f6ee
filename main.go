// Command docexec is one binary for every role: the operator, the executor
// of one partition, and the local all-in-one pipeline.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/docexec/docexec/executor"
	"github.com/docexec/docexec/internal/cli"
	"github.com/docexec/docexec/local"
	"github.com/docexec/docexec/manager"
)

const usage = `usage: docexec <command> [flags]

commands:
  manager    run the Kubernetes operator (DocExecutorPool controller)
  executor   serve one partition of a pool (Kafka → Redis → PostgreSQL)
  local      run the whole pipeline in one process with embedded stand-ins

Run "docexec <command> -h" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(cli.ExitUsage)
	}
	// SIGTERM and SIGINT end the context: finish the batch, publish, sync, exit.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// A second signal is not caught: it ends a shutdown that hangs.
	context.AfterFunc(ctx, stop)
	var code int
	switch os.Args[1] {
	case "manager":
		code = manager.Main(ctx, os.Args[2:], os.Stderr)
	case "executor":
		code = executor.Main(ctx, os.Args[2:], os.Stderr)
	case "local":
		code = local.Main(ctx, os.Args[2:], os.Stdin, os.Stdout, os.Stderr)
	case "-h", "--help", "help":
		fmt.Fprint(os.Stdout, usage)
	default:
		fmt.Fprintf(os.Stderr, "docexec: unknown command %q\n\n%s", os.Args[1], usage)
		code = cli.ExitUsage
	}
	stop()
	os.Exit(code)
}
