package testenv

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// repoRoot returns the repository's top directory, so every package's
// tests reach the same bin/ and config/: the nearest directory holding
// go.mod above the working directory (go test runs a test in its
// package's directory).
func repoRoot() string {
	wd, _ := os.Getwd()
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		if filepath.Dir(dir) == dir {
			return wd // not in a module: the errors name the paths tried
		}
	}
}

// KubeAssets returns the directory of the test control plane's binaries
// (etcd, kube-apiserver, kubectl, helm): KUBEBUILDER_ASSETS, or the bin/k8s
// that hack/k8s-binaries.sh fills.
func KubeAssets() string {
	if v := os.Getenv("KUBEBUILDER_ASSETS"); v != "" {
		return v
	}
	return filepath.Join(repoRoot(), "bin", "k8s")
}

// NeedControlPlane skips t under -short: it needs the test control plane.
func NeedControlPlane(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs the test control plane")
	}
}

// WithoutCRD leaves our CRD out of a control plane, for tests that install
// it the way users do.
func WithoutCRD(env *envtest.Environment) { env.CRDDirectoryPaths = nil }

// startControlPlane starts a fresh control plane (etcd + kube-apiserver)
// with our CRD installed; configure adjusts it before it starts (such as
// API server flags).
func startControlPlane(configure []func(*envtest.Environment)) (*envtest.Environment, *rest.Config, error) {
	assets := KubeAssets()
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		return nil, nil, fmt.Errorf("no kube-apiserver in %s: run `make test` or hack/k8s-binaries.sh", assets)
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(repoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	for _, f := range configure {
		f(env)
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("start the test control plane: %w", err)
	}
	return env, cfg, nil
}

// ControlPlane starts a control plane of t's own with our CRD installed,
// stopped when t ends; configure adjusts it before it starts. Under -short
// t is skipped.
func ControlPlane(t testing.TB, configure ...func(*envtest.Environment)) (*envtest.Environment, *rest.Config) {
	t.Helper()
	NeedControlPlane(t)
	env, cfg, err := startControlPlane(configure)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop the test control plane: %v", err)
		}
	})
	return env, cfg
}

// ControlPlaneMain is TestMain for a package whose tests share one control
// plane (they keep apart by namespace or name): it starts it, hands its
// config to connect, runs the tests, stops it and exits. Under -short it
// starts nothing and the tests skip themselves with NeedControlPlane.
func ControlPlaneMain(m *testing.M, connect func(*rest.Config) error, configure ...func(*envtest.Environment)) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	env, cfg, err := startControlPlane(configure)
	if err == nil {
		err = connect(cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if env != nil {
			env.Stop() //nolint:errcheck // failing already
		}
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stop the test control plane: %v\n", err)
	}
	os.Exit(code)
}

// Kubeconfig returns the path of a kubeconfig of env that authenticates as
// name in groups (RBAC decides what it may do), removed when t ends.
func Kubeconfig(t testing.TB, env *envtest.Environment, name string, groups ...string) string {
	t.Helper()
	u, err := env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		t.Fatalf("add user %s: %v", name, err)
	}
	raw, err := u.KubeConfig()
	if err != nil {
		t.Fatalf("kubeconfig of %s: %v", name, err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig") // each call its own directory
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatalf("write the kubeconfig of %s: %v", name, err)
	}
	return path
}
