package e2e

import (
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docexec/docexec/internal/testenv"
)

// outage is how long a server stays away in the outage tests: longer than
// every timeout and retry budget of the executor's clients.
// DOCEXEC_OUTAGE=3m makes it minutes.
func outage(t *testing.T) time.Duration {
	if d, err := time.ParseDuration(os.Getenv("DOCEXEC_OUTAGE")); err == nil && d > 0 {
		return d
	}
	return 15 * time.Second
}

// away is a server that the tests stop and start again.
type away struct {
	name        string
	port        string // where it listens: a reason for being unready names it
	stop, start func()
}

// theServers are the executor's three servers, each restartable with its
// data: a kfake broker keeping its log on disk, a redis-server saving a
// dump, a PostgreSQL cluster.
func theServers(t *testing.T) (servers, []away) {
	k := testenv.NewRestartableKafka(t, 1, "in", "out", "dlq")
	r := testenv.OwnRedis(t)
	pg := testenv.OwnPostgres(t)
	pgURL, err := url.Parse(pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	portOf := func(addr string) string { _, port, _ := net.SplitHostPort(addr); return port }
	return servers{brokers: k.Addrs(), redis: r.Addr(), dsn: pg.DSN}, []away{
		{"PostgreSQL", pgURL.Port(), func() { pg.Stop(t) }, func() { pg.Start(t) }},
		{"Redis", portOf(r.Addr()), func() { r.Stop(t) }, func() { r.Start(t) }},
		{"Kafka", portOf(k.Addrs()[0]), k.Stop, k.Start},
	}
}

// TestOutagesMidStreamAreWaitedOut stops each server in turn: it must not
// exit, must say on /readyz what it waits for (even with nothing to
// process: its sync and its reader meet the outage too), must log each
// change once rather than each retry, and must resume by itself with
// nothing lost.
func TestOutagesMidStreamAreWaitedOut(t *testing.T) {
	s, servers := theServers(t)
	f := newFleet(t, s)
	name := f.start()
	f.leader("")
	for _, srv := range servers {
		f.produce(60)
		f.waitCommitted() // idle: only the sync and the reader meet the outage
		logged := len(strings.Split(f.logs[name].String(), "\n"))
		srv.stop()
		if srv.name == "PostgreSQL" {
			f.produce(60) // processing goes on meanwhile
		}
		f.c.eventually("/readyz names "+srv.name+" during its outage", func() bool {
			code, body := f.ready(name)
			return code == 503 && strings.Contains(body, ":"+srv.port)
		})
		time.Sleep(outage(t))
		if !f.alive(name) {
			t.Fatalf("the executor exited during the %s outage:\n%s", srv.name, f.logs[name].String())
		}
		code, body := f.ready(name)
		t.Logf("/readyz at the end of the %s outage: %d %s", srv.name, code, body)
		srv.start()
		if srv.name != "PostgreSQL" {
			f.produce(60)
		}
		f.c.eventually("ready again after "+srv.name+" came back", func() bool {
			code, _ := f.ready(name)
			return code == 200
		})
		// Each change is a line or two, not one per retry.
		lines := strings.Split(f.logs[name].String(), "\n")[logged:]
		if len(lines) > 25 {
			t.Errorf("%d log lines during the %s outage of %s:\n%s", len(lines), srv.name, outage(t), strings.Join(lines, "\n"))
		}
	}
	f.produce(60)
	f.check() // every input committed; SIGTERM exits 0; PostgreSQL and the output match the oracle
}

// TestAnExecutorStartsWhileItsServersAreAway starts an executor with all
// three servers stopped: it waits, unready with the reason, and works once
// they are back.
func TestAnExecutorStartsWhileItsServersAreAway(t *testing.T) {
	s, servers := theServers(t)
	f := newFleet(t, s)
	f.produce(100)
	for _, srv := range servers {
		srv.stop()
	}
	name := f.start()
	f.c.eventually("/readyz says it is connecting to Redis", func() bool {
		code, body := f.ready(name)
		return code == 503 && strings.Contains(body, "redis: ") && strings.Contains(body, ":"+servers[1].port)
	})
	time.Sleep(outage(t))
	if !f.alive(name) {
		t.Fatalf("the executor exited while its servers were away:\n%s", f.logs[name].String())
	}
	for _, srv := range servers {
		srv.start()
	}
	f.c.eventually("ready once they are back", func() bool {
		code, _ := f.ready(name)
		return code == 200
	})
	f.produce(100)
	f.check()
}
