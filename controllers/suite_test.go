package controllers_test

import (
	"fmt"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/docexec/docexec/internal/testenv"
	"github.com/docexec/docexec/manager"
)

// One control plane (etcd + kube-apiserver, built by hack/k8s-binaries.sh)
// serves every test of the package; tests keep apart by namespace.
var (
	restConfig *rest.Config
	k8s        client.WithWatch
)

func TestMain(m *testing.M) {
	testenv.ControlPlaneMain(m, func(cfg *rest.Config) (err error) {
		restConfig = cfg
		if k8s, err = client.NewWithWatch(cfg, client.Options{Scheme: manager.Scheme()}); err != nil {
			return fmt.Errorf("client: %w", err)
		}
		return nil
	})
}
