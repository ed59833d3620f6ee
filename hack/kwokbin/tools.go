//go:build tools

// Package kwokbin pins the kwok command built by hack/k8s-binaries.sh.
package kwokbin

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
