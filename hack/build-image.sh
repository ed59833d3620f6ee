#!/usr/bin/env bash
# Builds the docexec image without a container engine: the static binary of
# the Dockerfile's build stage, packed by hack/image into an OCI archive with
# the content of its final stage (distroless static:nonroot files, /docexec,
# user 65532:65532, no shell). The same source gives the same digest, and the
# tag is derived from it (dev-<digest prefix>), so a changed image never
# hides behind an old tag. When hack/cluster.sh's node runs, the image is
# imported into its containerd.
#
#   hack/build-image.sh [OUT.tar]   (default bin/image/docexec.tar)
#
# IMAGE_REPO (default docker.io/docexec/docexec) and IMAGE_TAG (default
# dev-<digest prefix>) name the image.
# Prints the image name (docker.io/docexec/docexec:dev-...) on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/bin/image/docexec.tar}")
REPO=${IMAGE_REPO:-docker.io/docexec/docexec}
mkdir -p "$(dirname "$OUT")"
bin=$(dirname "$OUT")/docexec
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$bin" .)
name=$(cd "$ROOT/hack/image" && go run . -binary "$bin" -repo "$REPO" -tag "${IMAGE_TAG:-}" -o "$OUT")
echo "build-image: $name in $OUT" >&2
if "$ROOT/hack/cluster.sh" kubeconfig >/dev/null 2>&1; then
  "$ROOT/hack/cluster.sh" import "$OUT"
fi
echo "$name"
