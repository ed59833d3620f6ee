package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/url"
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
	DSN    string
	bin    string
	dir    string
	port   int
	listen string
}

// PostgresOptions configure a private PostgreSQL server.
type PostgresOptions struct {
	// Host is the address it listens on besides 127.0.0.1 (e.g. the bridge
	// address that pods of hack/cluster.sh's node reach); clients there
	// authenticate with Password. Empty: loopback only, no password.
	Host string
	// Password of the postgres user for clients on Host.
	Password string
}

// OwnPostgres starts a private PostgreSQL server on loopback, stopped when
// t ends.
func OwnPostgres(t testing.TB) *PostgresServer { return OwnPostgresWith(t, PostgresOptions{}) }

// OwnPostgresWith starts a private PostgreSQL server, stopped when t ends.
// With o.Host, DSN names that host and carries the password.
func OwnPostgresWith(t testing.TB, o PostgresOptions) *PostgresServer {
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
	p := &PostgresServer{bin: filepath.Dir(bins[len(bins)-1]), dir: dir, port: port, listen: "127.0.0.1",
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
	initdb := []string{"-D", dir + "/data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"}
	if o.Host != "" {
		// The superuser's password, for clients on o.Host.
		pwfile := filepath.Join(dir, "password")
		if err := os.WriteFile(pwfile, []byte(o.Password+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		initdb = append(initdb, "--pwfile", pwfile)
	}
	p.run(t, "initdb", initdb...)
	if o.Host != "" {
		p.allowHost(t, o)
	}
	p.Start(t)
	t.Cleanup(func() {
		p.pgctl("-m", "immediate", "-w", "stop") //nolint:errcheck // may be stopped already
		os.RemoveAll(dir)
	})
	return p
}

// allowHost makes the server listen on o.Host too and lets clients of its
// /24 in with the password; loopback stays trusted.
func (p *PostgresServer) allowHost(t testing.TB, o PostgresOptions) {
	t.Helper()
	p.listen += "," + o.Host
	f, err := os.OpenFile(filepath.Join(p.dir, "data", "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = fmt.Fprintf(f, "host all all %s/24 scram-sha-256\n", o.Host)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		t.Fatalf("allow %s in pg_hba.conf: %v", o.Host, err)
	}
	p.DSN = fmt.Sprintf("postgres://postgres:%s@%s/postgres?sslmode=disable", url.QueryEscape(o.Password), net.JoinHostPort(o.Host, strconv.Itoa(p.port)))
}

// Start starts the server (again).
func (p *PostgresServer) Start(t testing.TB) {
	t.Helper()
	if out, err := p.pgctl("-l", p.dir+"/log", "-w", "start", "-o",
		fmt.Sprintf("-p %d -k %s -c listen_addresses=%s -c fsync=off", p.port, p.dir, p.listen)); err != nil {
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
