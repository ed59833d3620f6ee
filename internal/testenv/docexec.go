package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// docexec builds the binary on its first call and returns it on every call.
var docexec = sync.OnceValues(func() (string, error) {
	// Next to the test binary: go test's own work directory, which it
	// removes when the run ends (a shared binary outlives any one test).
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the test binary: %w", err)
	}
	dir, err := os.MkdirTemp(filepath.Dir(exe), "docexec-")
	if err != nil {
		return "", fmt.Errorf("make a directory for docexec: %w", err)
	}
	bin := filepath.Join(dir, "docexec")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = repoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
})

// Docexec returns the path of the docexec binary, built once per test
// process.
func Docexec(t testing.TB) string {
	t.Helper()
	bin, err := docexec()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
