package store

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/docexec/docexec/internal/testenv"
)

// openPostgres returns a migrated Store in a fresh schema, closed at cleanup.
func openPostgres(tb testing.TB, opts Options) *Store {
	tb.Helper()
	s, err := OpenPostgres(context.Background(), testenv.Postgres(tb), opts)
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
