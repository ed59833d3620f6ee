#!/usr/bin/env bash
# Builds the Kubernetes test binaries (kube-apiserver, kube-controller-manager,
# etcd, kubectl, helm, and for hack/cluster.sh's node kube-scheduler, kube-proxy and
# kubelet) from Go modules and links them at bin/k8s/, the directory envtest's
# KUBEBUILDER_ASSETS / BinaryAssetsDirectory points to. Also builds kwok (fake
# nodes and pods, for the scale benchmark) with its stage files and links it at
# bin/kwok/ (bin/kwok/kwok, bin/kwok/stage/).
#
# Versions come from hack/k8sbin/go.mod (a separate Go module; see tools.go),
# kwok's from hack/kwokbin/go.mod (another one, so that kwok builds with the
# dependencies it was released with and the Kubernetes binaries keep theirs).
# Builds are cached under ${XDG_CACHE_HOME:-$HOME/.cache}/docexec/k8s/<key>/
# (kwok under .../docexec/kwok/<key>/),
# where <key> is derived from those versions, the Go toolchain/platform and the
# sha256 of hack/k8sbin/go.sum, so a reused machine rebuilds nothing. A cold
# build takes 7-12 minutes on 2 cores and ~2.5 GB of RAM.
#
# Usage: hack/k8s-binaries.sh
#   Progress goes to stderr; the absolute path of bin/k8s is printed on stdout,
#   e.g. KUBEBUILDER_ASSETS="$(hack/k8s-binaries.sh)".
# Safe to run concurrently (a flock(1) lock serialises builds).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODDIR="$ROOT/hack/k8sbin"
LINK="$ROOT/bin/k8s"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet etcd kubectl helm)
# Bump when the build recipe below changes in a way that affects the binaries.
RECIPE=3

log() { printf 'k8s-binaries: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Version of module $1 as required in hack/k8sbin/go.mod.
modversion() {
	local v
	v=$(awk -v m="$1" '$1 == m && $2 ~ /^v[0-9]/ { print $2; exit }' "$MODDIR/go.mod")
	[[ -n "$v" ]] || die "$1 is not required in $MODDIR/go.mod"
	printf '%s\n' "$v"
}

K8S_VERSION=$(modversion k8s.io/kubernetes)      # e.g. v1.37.2
ETCD_VERSION=$(modversion go.etcd.io/etcd/server/v3) # e.g. v3.7.0
HELM_VERSION=$(modversion helm.sh/helm/v3)        # e.g. v3.22.0
[[ "$K8S_VERSION" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || die "unexpected kubernetes version $K8S_VERSION"
K8S_MAJOR=${BASH_REMATCH[1]}
K8S_MINOR=${BASH_REMATCH[2]}

export GOWORK=off CGO_ENABLED=0
GOVERSION=$(cd "$MODDIR" && go env GOVERSION)
GOPLATFORM=$(cd "$MODDIR" && go env GOOS)-$(cd "$MODDIR" && go env GOARCH)
SUM=$(sha256sum "$MODDIR/go.sum" | cut -c1-16)
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_${GOVERSION}-${GOPLATFORM}_r${RECIPE}_sum-${SUM}"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/docexec/k8s"
CACHE_DIR="$CACHE_ROOT/$KEY"

# kwok: built apart from the rest, into a cache dir of its own, then linked at
# bin/kwok. Its stage files (what fake nodes and pods go through) come from its
# module's source, kustomize/stage/.
KWOK_MODDIR="$ROOT/hack/kwokbin"
KWOK_LINK="$ROOT/bin/kwok"
KWOK_RECIPE=1
kwok() {
	local version sum key dir build out start=$SECONDS
	version=$(awk '$1 == "require" && $2 == "sigs.k8s.io/kwok" { print $3; exit } $1 == "sigs.k8s.io/kwok" && $2 ~ /^v[0-9]/ { print $2; exit }' "$KWOK_MODDIR/go.mod")
	[[ -n "$version" ]] || die "sigs.k8s.io/kwok is not required in $KWOK_MODDIR/go.mod"
	sum=$(sha256sum "$KWOK_MODDIR/go.sum" | cut -c1-16)
	key="kwok-${version}_${GOVERSION}-${GOPLATFORM}_r${KWOK_RECIPE}_sum-${sum}"
	dir="${XDG_CACHE_HOME:-$HOME/.cache}/docexec/kwok/$key"
	if [[ ! -x "$dir/kwok" ]]; then
		mkdir -p "$(dirname "$dir")"
		exec 8>"$(dirname "$dir")/.lock"
		flock 8
		if [[ ! -x "$dir/kwok" ]]; then
			log "building kwok $version ..."
			rm -rf "$(dirname "$dir")"/.build-*
			build=$(mktemp -d "$(dirname "$dir")/.build-$key.XXXXXX")
			local src
			src=$(cd "$KWOK_MODDIR" && go mod download -json sigs.k8s.io/kwok | awk -F'"' '$2 == "Dir" { print $4 }')
			[[ -d "$src/kustomize/stage" ]] || { rm -rf "$build"; die "no kustomize/stage in kwok's module source ($src)"; }
			(cd "$KWOK_MODDIR" && go build -mod=readonly -trimpath -buildvcs=false -ldflags "-s -w" -o "$build/kwok" sigs.k8s.io/kwok/cmd/kwok) ||
				{ rm -rf "$build"; die "kwok build failed"; }
			cp -R "$src/kustomize/stage" "$build/stage"
			chmod -R u+w,go-w "$build" && chmod 755 "$build"
			out=$("$build/kwok" --version 2>&1) && [[ "$out" == *"$version"* ]] || { rm -rf "$build"; die "kwok --version: $out"; }
			rm -rf "$dir"
			mv -T "$build" "$dir"
			log "built kwok $version in $((SECONDS - start))s"
		fi
		exec 8>&-
	fi
	if [[ -e "$KWOK_LINK" && ! -L "$KWOK_LINK" ]]; then
		die "$KWOK_LINK exists and is not a symlink; remove it"
	fi
	if [[ "$(readlink "$KWOK_LINK" 2>/dev/null || true)" != "$dir" ]]; then
		mkdir -p "$(dirname "$KWOK_LINK")"
		ln -sfn "$dir" "$KWOK_LINK.tmp.$$"
		mv -fT "$KWOK_LINK.tmp.$$" "$KWOK_LINK"
		log "linked ${KWOK_LINK#"$ROOT"/} -> $dir"
	fi
}
kwok

complete() {
	local b
	for b in "${BINARIES[@]}"; do
		[[ -x "$CACHE_DIR/$b" ]] || return 1
	done
}

# Point bin/k8s at the cache dir (atomic rename of a fresh symlink).
link() {
	mkdir -p "$(dirname "$LINK")"
	if [[ -e "$LINK" && ! -L "$LINK" ]]; then
		die "$LINK exists and is not a symlink; remove it"
	fi
	if [[ "$(readlink "$LINK" 2>/dev/null || true)" != "$CACHE_DIR" ]]; then
		local tmp="$LINK.tmp.$$"
		ln -sfn "$CACHE_DIR" "$tmp"
		mv -fT "$tmp" "$LINK"
		log "linked ${LINK#"$ROOT"/} -> $CACHE_DIR"
	fi
	printf '%s\n' "$LINK"
}

if complete; then
	log "cache hit: $CACHE_DIR"
	link
	exit 0
fi

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock"
if ! flock -n 9; then
	log "waiting for another build (lock $CACHE_ROOT/.lock)"
	flock 9
fi
if complete; then # built by whoever held the lock
	log "cache hit after waiting: $CACHE_DIR"
	link
	exit 0
fi

# We hold the lock, so any .build-* dir is left over from a killed run.
rm -rf "$CACHE_ROOT"/.build-*
BUILD_DIR=$(mktemp -d "$CACHE_ROOT/.build-$KEY.XXXXXX")
trap 'rm -rf "$BUILD_DIR"' EXIT
trap 'exit 130' INT TERM

VERSION_LDFLAGS=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	VERSION_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$K8S_MAJOR -X $pkg.gitMinor=$K8S_MINOR -X $pkg.gitTreeState=clean"
done
HELM_LDFLAGS=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
	HELM_LDFLAGS+=" -X $pkg.k8sVersionMajor=$K8S_MAJOR -X $pkg.k8sVersionMinor=$K8S_MINOR"
done

# build <output name> <package> <version> <extra ldflags>
build() {
	local name=$1 pkg=$2 version=$3 extra=$4 start=$SECONDS
	log "building $name $version ($pkg) ..."
	(cd "$MODDIR" && go build -mod=readonly -trimpath -buildvcs=false \
		-ldflags "-s -w$VERSION_LDFLAGS$extra" -o "$BUILD_DIR/$name" "$pkg")
	log "built $name $version in $((SECONDS - start))s"
}

log "cache miss: building into $CACHE_DIR"
total=$SECONDS
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$K8S_VERSION" ""
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$K8S_VERSION" ""
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$K8S_VERSION" ""
build kube-proxy k8s.io/kubernetes/cmd/kube-proxy "$K8S_VERSION" ""
build kubelet k8s.io/kubernetes/cmd/kubelet "$K8S_VERSION" ""
build kubectl k8s.io/kubernetes/cmd/kubectl "$K8S_VERSION" ""
# Go names the etcd main package's binary "server"; install it as "etcd".
build etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" ""
build helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$HELM_LDFLAGS"

# Sanity check before publishing to the cache: check_version <want> <cmd...>
check_version() {
	local want=$1 out
	shift
	out=$("$@" 2>&1) || die "$* failed: $out"
	[[ "$out" == *"$want"* ]] || die "$* does not report $want: $out"
}
check_version "$K8S_VERSION" "$BUILD_DIR/kube-apiserver" --version
check_version "$K8S_VERSION" "$BUILD_DIR/kube-controller-manager" --version
check_version "$K8S_VERSION" "$BUILD_DIR/kube-scheduler" --version
check_version "$K8S_VERSION" "$BUILD_DIR/kube-proxy" --version
check_version "$K8S_VERSION" "$BUILD_DIR/kubelet" --version
check_version "$K8S_VERSION" "$BUILD_DIR/kubectl" version --client
check_version "${ETCD_VERSION#v}" "$BUILD_DIR/etcd" --version
check_version "$HELM_VERSION" "$BUILD_DIR/helm" version

chmod 755 "$BUILD_DIR"
rm -rf "$CACHE_DIR" # an incomplete leftover (complete() was false under the lock)
mv -T "$BUILD_DIR" "$CACHE_DIR"
trap - EXIT
log "all built in $((SECONDS - total))s"
link
