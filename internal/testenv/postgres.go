package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
)

// PostgresServer is a private PostgreSQL server that a chaos test may stop
// and start (the shared one serves other packages' tests meanwhile).
type PostgresServer struct {
	// DSN reaches the server's postgres database.
	DSN  string
	bin  string
	dir  string
	port int
}

// OwnPostgres starts a private PostgreSQL server, stopped when t ends.
func OwnPostgres(t testing.TB) *PostgresServer {
	t.Helper()
	need(t, "DOCEXEC_TEST_POSTGRES", "a PostgreSQL server") // the same packages make this one possible
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		t.Fatal("no PostgreSQL binaries under /usr/lib/postgresql: run `make test`")
	}
	sort.Strings(bins)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err := os.MkdirTemp("", "docexec-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &PostgresServer{bin: filepath.Dir(bins[len(bins)-1]), dir: dir, port: port,
		DSN: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)}
	if os.Geteuid() == 0 { // initdb refuses root: the server runs as postgres
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	p.run(t, "initdb", "-D", dir+"/data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	p.Start(t)
	t.Cleanup(func() {
		p.pgctl("-m", "immediate", "-w", "stop") //nolint:errcheck // may be stopped already
		os.RemoveAll(dir)
	})
	return p
}

// Start starts the server (again).
func (p *PostgresServer) Start(t testing.TB) {
	t.Helper()
	if out, err := p.pgctl("-l", p.dir+"/log", "-w", "start", "-o",
		fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", p.port, p.dir)); err != nil {
		t.Fatalf("start PostgreSQL: %v\n%s", err, out)
	}
}

// Stop stops the server at once, as a crash would.
func (p *PostgresServer) Stop(t testing.TB) {
	t.Helper()
	if out, err := p.pgctl("-m", "immediate", "-w", "stop"); err != nil {
		t.Fatalf("stop PostgreSQL: %v\n%s", err, out)
	}
}

func (p *PostgresServer) pgctl(args ...string) ([]byte, error) {
	return p.command("pg_ctl", append([]string{"-D", p.dir + "/data"}, args...)...).CombinedOutput()
}

func (p *PostgresServer) run(t testing.TB, tool string, args ...string) {
	t.Helper()
	if out, err := p.command(tool, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", tool, err, out)
	}
}

func (p *PostgresServer) command(tool string, args ...string) *exec.Cmd {
	path := filepath.Join(p.bin, tool)
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}
