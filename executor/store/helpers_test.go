package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// postgresEnv names the environment variable holding the DSN of the
// PostgreSQL server that integration tests use (`make test` starts one).
const postgresEnv = "DOCEXEC_TEST_POSTGRES"

// postgresDSN returns a DSN for a fresh schema of the test server, dropped
// when the test ends. It skips in -short mode and fails when no server is set.
func postgresDSN(tb testing.TB) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: needs PostgreSQL")
	}
	dsn := os.Getenv(postgresEnv)
	if dsn == "" {
		tb.Fatalf("%s is empty: run `make test` (which starts a throwaway PostgreSQL), "+
			"or set %s to a server's DSN, e.g. postgres://postgres@127.0.0.1:5439/postgres?sslmode=disable "+
			"(`go test -short` skips these tests)", postgresEnv, postgresEnv)
	}
	admin, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		tb.Fatalf("connect to %s=%s: %v", postgresEnv, dsn, err)
	}
	var buf [6]byte
	_, _ = rand.Read(buf[:])
	schema := "docexec_test_" + hex.EncodeToString(buf[:])
	if err := admin.Exec(`CREATE SCHEMA "` + schema + `"`).Error; err != nil {
		tb.Fatalf("create schema %s: %v", schema, err)
	}
	tb.Cleanup(func() {
		if err := admin.Exec(`DROP SCHEMA "` + schema + `" CASCADE`).Error; err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
		if sqlDB, err := admin.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	return withSearchPath(tb, dsn, schema)
}

// withSearchPath adds search_path=schema to a URL or key=value DSN.
func withSearchPath(tb testing.TB, dsn, schema string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			tb.Fatalf("parse %s: %v", postgresEnv, err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + schema
}

// openPostgres returns a migrated Store in a fresh schema, closed at cleanup.
func openPostgres(tb testing.TB, opts Options) *Store {
	tb.Helper()
	dsn := postgresDSN(tb)
	s, err := OpenPostgres(context.Background(), dsn, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return migrated(tb, s)
}

// openSQLite returns a migrated Store on a new file, closed at cleanup.
func openSQLite(tb testing.TB, opts Options) *Store {
	tb.Helper()
	s, err := OpenSQLite(context.Background(), filepath.Join(tb.TempDir(), "docexec.db"), opts)
	if err != nil {
		tb.Fatal(err)
	}
	return migrated(tb, s)
}

func migrated(tb testing.TB, s *Store) *Store {
	tb.Helper()
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	if err := s.Migrate(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return s
}

// eachDB runs fn as the subtests "postgres" and "sqlite", each on a fresh,
// migrated Store.
func eachDB(t *testing.T, opts Options, fn func(t *testing.T, s *Store)) {
	t.Helper()
	t.Run("postgres", func(t *testing.T) { fn(t, openPostgres(t, opts)) })
	t.Run("sqlite", func(t *testing.T) { fn(t, openSQLite(t, opts)) })
}
