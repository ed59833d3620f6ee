package controllers_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/docexec/docexec/manager"
)

// One control plane (etcd + kube-apiserver, built by hack/k8s-binaries.sh)
// serves every test of the package; tests keep apart by namespace.
var (
	testEnv *envtest.Environment
	k8s     client.WithWatch
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // the envtest tests skip themselves
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets, _ = filepath.Abs("../bin/k8s")
	}
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		fmt.Fprintf(os.Stderr, "controllers: no kube-apiserver in %s: run `make test` or hack/k8s-binaries.sh\n", assets)
		os.Exit(1)
	}
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := testEnv.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "controllers: start the test control plane: %v\n", err)
		os.Exit(1)
	}
	k8s, err = client.NewWithWatch(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "controllers: client: %v\n", err)
		testEnv.Stop()
		os.Exit(1)
	}
	code := m.Run()
	if err := testEnv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "controllers: stop the test control plane: %v\n", err)
	}
	os.Exit(code)
}

func needControlPlane(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs the test control plane")
	}
}
