#!/usr/bin/env bash
# A single-node Kubernetes cluster on this machine, for the e2e suite and for
# trying the operator: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kube-proxy and a kubelet on containerd + runc + the CNI
# bridge plugin. No Docker, no registry, no DNS: images are built here
# (hack/image) and imported into containerd; pods reach the API server
# through the `kubernetes` Service and everything else by IP address.
#
#   hack/cluster.sh up            start (or find running) and print the kubeconfig path
#   hack/cluster.sh down          stop everything and leave the host as it was
#   hack/cluster.sh kubeconfig    print the kubeconfig path of the running cluster
#   hack/cluster.sh import FILE.. import OCI image archives into the node's containerd
#   hack/cluster.sh with CMD...   run CMD against the cluster (started and stopped
#                                 around CMD unless it was running already); CMD sees
#                                 DOCEXEC_TEST_KUBECONFIG, DOCEXEC_TEST_NODE_IP and
#                                 DOCEXEC_CLUSTER_DIR
#
# Needs root (it creates a bridge, nftables tables, mounts and cgroups) and
# cgroup v1 as on our CI machines. The Debian packages containerd, runc,
# containernetworking-plugins, nftables and conntrack are installed with apt-get
# when missing; the Kubernetes binaries come from hack/k8s-binaries.sh.
#
# All state lives under $DOCEXEC_CLUSTER_DIR (default /tmp/docexec-cluster).
# What the node must change outside it is recorded there and undone by
# `down`: sysctls the kubelet rewrites, host paths that kubelet and containerd
# hard-code, the bridge, our nftables tables and kube-proxy's, mounts, and the
# kubepods cgroups.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${DOCEXEC_CLUSTER_DIR:-/tmp/docexec-cluster}
BRIDGE=dxbr0
NODE_IP=10.217.0.1
POD_CIDR=10.217.0.0/24
SERVICE_CIDR=10.218.0.0/24
KUBERNETES_SERVICE_IP=10.218.0.1
NODE_NAME=docexec-node
ETCD_PORT=23790
APISERVER_PORT=6443
PAUSE_REPO=docker.io/docexec/pause
PAUSE_IMAGE=$PAUSE_REPO:v1
NFT_TABLE=docexec-cluster
# Global settings the kubelet (and the bridge plugin) rewrite; saved on the
# first `up` and restored by `down`.
SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
	kernel/keys/root_maxkeys kernel/keys/root_maxbytes net/ipv4/ip_forward)
# Host paths the kubelet, containerd and the CNI plugins use whatever their
# configuration says; whichever of them `up` creates, `down` removes.
HOST_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /run/containerd
	/var/lib/cni /run/netns /opt/cni /etc/cni)
PACKAGES=(containerd runc containernetworking-plugins nftables conntrack)
# Start order; `down` stops them in reverse.
DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)

BIN=$STATE/bin
PKI=$STATE/pki
RUN=$STATE/run
LOGS=$STATE/logs
SOCK=$STATE/containerd/containerd.sock
KUBECONFIG_ADMIN=$STATE/admin.kubeconfig

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# ---- prerequisites -------------------------------------------------------------

install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# The packages' services are not started (no init here; policy-rc.d says no).
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

check_host() {
	[[ "$(id -u)" == 0 ]] || die "needs root (bridge, nftables, mounts, cgroups)"
	[[ -d /sys/fs/cgroup/memory && -d /sys/fs/cgroup/freezer ]] ||
		die "needs cgroup v1 with the memory and freezer controllers (this script configures cgroupfs + failCgroupV1: false)"
}

# Link the node's binaries into $BIN: the Kubernetes ones from the pinned
# build, and the pause program that holds each pod's namespaces.
prepare_binaries() {
	local k8s
	k8s=$("$ROOT/hack/k8s-binaries.sh")
	mkdir -p "$BIN"
	local b
	for b in etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl helm; do
		ln -sfn "$k8s/$b" "$BIN/$b"
	done
}

# ---- processes -----------------------------------------------------------------

# alive PID: the process exists and is not a zombie (setsid daemons linger as
# zombies until something reaps them).
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ "${stat%% *}" != Z ]]
}

running() { [[ -f "$RUN/$1.pid" ]] && alive "$(cat "$RUN/$1.pid")"; }

# start NAME CMD...: run CMD as a daemon in its own session, logs in $LOGS.
start() {
	local name=$1
	shift
	if running "$name"; then return 0; fi
	setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
	echo $! >"$RUN/$name.pid"
	log "started $name (pid $!)"
}

# stop NAME: SIGTERM, then SIGKILL after 15 s.
stop() {
	local name=$1 pid i
	[[ -f "$RUN/$name.pid" ]] || return 0
	pid=$(cat "$RUN/$name.pid")
	if alive "$pid"; then
		kill -CONT "$pid" 2>/dev/null || true # the suite stops the kubelet for a while
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 150); do
			alive "$pid" || break
			sleep 0.1
		done
		if alive "$pid"; then
			log "$name did not stop on SIGTERM: killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$RUN/$name.pid"
}

# wait_for WHAT SECONDS CMD...: poll CMD until it succeeds.
wait_for() {
	local what=$1 seconds=$2 i
	shift 2
	for i in $(seq $((seconds * 5))); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	die "timed out after ${seconds}s waiting for $what (logs in $LOGS)"
}

# ---- host state that down must undo -----------------------------------------------

save_host_state() {
	local s p top
	if [[ ! -f "$STATE/sysctls.saved" ]]; then
		for s in "${SYSCTLS[@]}"; do
			printf '%s %s\n' "$s" "$(cat "/proc/sys/$s")"
		done >"$STATE/sysctls.saved.tmp"
		mv "$STATE/sysctls.saved.tmp" "$STATE/sysctls.saved"
	fi
	# The highest missing ancestor of each path is what we would create.
	for p in "${HOST_PATHS[@]}"; do
		top=""
		while [[ ! -e "$p" && "$p" != / ]]; do
			top=$p
			p=$(dirname "$p")
		done
		if [[ -n "$top" ]] && ! grep -qxF "$top" "$STATE/created-paths" 2>/dev/null; then
			echo "$top" >>"$STATE/created-paths"
		fi
	done
}

restore_host_state() {
	local s v p
	if [[ -f "$STATE/sysctls.saved" ]]; then
		while read -r s v; do
			echo "$v" >"/proc/sys/$s" 2>/dev/null || log "could not restore $s=$v"
		done <"$STATE/sysctls.saved"
	fi
	if [[ -f "$STATE/created-paths" ]]; then
		while read -r p; do
			unmount_under "$p"
			rm -rf "$p"
		done <"$STATE/created-paths"
	fi
}

# unmount_under DIR [PREFIX]: unmount everything mounted at or below DIR
# (only the entries of DIR whose names start with PREFIX, if given), deepest first.
unmount_under() {
	local m
	findmnt -rn -o TARGET | awk -v d="$1" -v p="${2:-}" '(p == "" && $0 == d) || index($0, d "/" p) == 1' | sort -r |
		while read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
		done
}

# ---- network ------------------------------------------------------------------

setup_network() {
	if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
		ip link add "$BRIDGE" type bridge
		ip addr add "$NODE_IP/24" dev "$BRIDGE"
	fi
	ip link set "$BRIDGE" up
	# Pods talk to each other and to this host, never beyond it: the bridge
	# plugin turns on forwarding, this table keeps it inside the bridge.
	nft -f - <<-EOF
		table inet $NFT_TABLE
		delete table inet $NFT_TABLE
		table inet $NFT_TABLE {
			chain forward {
				type filter hook forward priority -10; policy accept;
				iifname "$BRIDGE" oifname != "$BRIDGE" drop
				oifname "$BRIDGE" iifname != "$BRIDGE" drop
			}
		}
	EOF
}

teardown_network() {
	local t
	for t in "inet $NFT_TABLE" "ip kube-proxy" "ip6 kube-proxy"; do
		nft list table $t >/dev/null 2>&1 && nft delete table $t
	done
	ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
	return 0
}

# ---- configuration ---------------------------------------------------------------

# cert NAME SUBJECT [SANS] [EXTENDED_KEY_USAGE]: a key and a certificate signed by our CA.
cert() {
	local name=$1 subj=$2 sans=${3:-} eku=${4:-serverAuth,clientAuth} ext
	ext="$PKI/$name.ext"
	{
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=$eku"
		[[ -n "$sans" ]] && echo "subjectAltName=$sans"
	} >"$ext"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
	openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
		-days 3650 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
}

# kubeconfig_for FILE USER TOKEN: a kubeconfig that authenticates with a bearer token.
kubeconfig_for() {
	local file=$1 user=$2 token=$3
	cat >"$file" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: docexec
		  cluster:
		    server: https://$NODE_IP:$APISERVER_PORT
		    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
		users:
		- name: $user
		  user:
		    token: $token
		contexts:
		- name: docexec
		  context: {cluster: docexec, user: $user}
		current-context: docexec
	EOF
	chmod 600 "$file"
}

write_pki() {
	[[ -f "$PKI/done" ]] && return 0
	rm -rf "$PKI"
	mkdir -p "$PKI"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
		-keyout "$PKI/ca.key" -out "$PKI/ca.crt" -subj "/CN=docexec-cluster-ca" 2>/dev/null
	cert apiserver "/CN=kube-apiserver" \
		"IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" serverAuth
	cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "" clientAuth
	openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
	openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
	local admin node
	admin=$(openssl rand -hex 24)
	node=$(openssl rand -hex 24)
	# token,user,uid,"group1,group2"
	printf '%s,admin,admin,"system:masters"\n%s,system:node:%s,%s,"system:nodes"\n' \
		"$admin" "$node" "$NODE_NAME" "$NODE_NAME" >"$PKI/tokens.csv"
	kubeconfig_for "$KUBECONFIG_ADMIN" admin "$admin"
	kubeconfig_for "$STATE/kubelet.kubeconfig" "system:node:$NODE_NAME" "$node"
	chmod 600 "$PKI"/*.key "$PKI/tokens.csv"
	touch "$PKI/done"
}

write_configs() {
	mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/kubelet" "$STATE/kubelet-plugins" "$STATE/kcm-flex"
	cat >"$STATE/containerd/config.toml" <<-EOF
		version = 2
		root = "$STATE/containerd/root"
		state = "$STATE/containerd/state"
		disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
		  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
		  "io.containerd.tracing.processor.v1.otlp"]
		[grpc]
		  address = "$SOCK"
		[ttrpc]
		  address = "$SOCK.ttrpc"
		[plugins."io.containerd.internal.v1.opt"]
		  path = "$STATE/containerd/opt"
		[plugins."io.containerd.grpc.v1.cri"]
		  sandbox_image = "$PAUSE_IMAGE"
		  # The sandbox we run in lacks CAP_SYS_RESOURCE: runc cannot lower
		  # oom_score_adj below its own, so let containerd clamp it.
		  restrict_oom_score_adj = true
		  [plugins."io.containerd.grpc.v1.cri".containerd]
		    snapshotter = "overlayfs"
		    default_runtime_name = "runc"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
		        SystemdCgroup = false
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "/usr/lib/cni"
		    conf_dir = "$STATE/cni/net.d"
	EOF
	cat >"$STATE/cni/net.d/10-docexec.conflist" <<-EOF
		{
		  "cniVersion": "1.0.0",
		  "name": "docexec",
		  "plugins": [
		    {
		      "type": "bridge",
		      "bridge": "$BRIDGE",
		      "isGateway": true,
		      "ipMasq": false,
		      "hairpinMode": true,
		      "ipam": {
		        "type": "host-local",
		        "dataDir": "$STATE/cni/networks",
		        "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "${NODE_IP%.*}.10", "gateway": "$NODE_IP"}]],
		        "routes": [{"dst": "0.0.0.0/0"}]
		      }
		    },
		    {"type": "portmap", "capabilities": {"portMappings": true}},
		    {"type": "loopback"}
		  ]
		}
	EOF
	cat >"$STATE/kubelet/config.yaml" <<-EOF
		apiVersion: kubelet.config.k8s.io/v1beta1
		kind: KubeletConfiguration
		address: $NODE_IP
		port: 10250
		readOnlyPort: 0
		healthzBindAddress: 127.0.0.1
		healthzPort: 10248
		authentication:
		  anonymous: {enabled: false}
		  webhook: {enabled: true}
		  x509: {clientCAFile: $PKI/ca.crt}
		authorization: {mode: Webhook}
		# cgroup v1 here, and no systemd.
		cgroupDriver: cgroupfs
		failCgroupV1: false
		containerRuntimeEndpoint: unix://$SOCK
		# Leave the host's iptables alone; kube-proxy (nftables) does services.
		makeIPTablesUtilChains: false
		volumePluginDir: $STATE/kubelet-plugins
		podLogsDir: $STATE/pod-logs
		failSwapOn: false
		registerNode: true
		serializeImagePulls: false
		# Nothing can be pulled: never garbage-collect our imported images.
		imageGCHighThresholdPercent: 100
		imageGCLowThresholdPercent: 99
		evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
		# No cluster DNS: pods reach everything by IP.
		resolvConf: /etc/resolv.conf
		containerLogMaxSize: 10Mi
		rotateCertificates: false
	EOF
	cat >"$STATE/kube-proxy.yaml" <<-EOF
		apiVersion: kubeproxy.config.k8s.io/v1alpha1
		kind: KubeProxyConfiguration
		clientConnection: {kubeconfig: $KUBECONFIG_ADMIN}
		hostnameOverride: $NODE_NAME
		mode: nftables
		clusterCIDR: $POD_CIDR
		nodePortAddresses: ["$NODE_IP/32"]
		healthzBindAddress: 127.0.0.1:10256
		metricsBindAddress: 127.0.0.1:10249
		# 0: leave the host's conntrack sysctls as they are.
		conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
	EOF
}

# ---- the daemons ---------------------------------------------------------------

apiserver_ready() {
	curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(awk -F, 'NR==1{print $1}' "$PKI/tokens.csv")" \
		"https://$NODE_IP:$APISERVER_PORT/readyz" >/dev/null
}

start_control_plane() {
	start etcd "$BIN/etcd" --name docexec --data-dir "$STATE/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
		--initial-cluster "docexec=http://127.0.0.1:$((ETCD_PORT + 10))" --unsafe-no-fsync --log-level warn
	wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
	# Bound to the bridge (not loopback) so that pods reach it through the
	# kubernetes Service, whose endpoint the lease reconciler keeps.
	start kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
		--endpoint-reconciler-type lease --service-cluster-ip-range "$SERVICE_CIDR" \
		--tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
		--client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \
		--kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types InternalIP \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
		--cert-dir "$STATE/apiserver"
	wait_for kube-apiserver 60 apiserver_ready
	start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG_ADMIN" \
		--leader-elect=false --secure-port=0 --use-service-account-credentials \
		--root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
		--flex-volume-plugin-dir "$STATE/kcm-flex"
	start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$KUBECONFIG_ADMIN" \
		--authentication-kubeconfig "$KUBECONFIG_ADMIN" --authorization-kubeconfig "$KUBECONFIG_ADMIN" \
		--leader-elect=false --bind-address 127.0.0.1 --secure-port 10259
}

start_node() {
	start containerd containerd --config "$STATE/containerd/config.toml"
	wait_for containerd 30 ctr -a "$SOCK" version
	if ! ctr -a "$SOCK" -n k8s.io images check "name==$PAUSE_IMAGE" 2>/dev/null | grep -q "$PAUSE_IMAGE"; then
		build_pause_image
		import_images "$STATE/pause.tar"
	fi
	start kubelet "$BIN/kubelet" --config "$STATE/kubelet/config.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
		--root-dir "$STATE/kubelet" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"
	start kube-proxy "$BIN/kube-proxy" --config "$STATE/kube-proxy.yaml"
	wait_for "node $NODE_NAME Ready" 120 kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
	# Pods need their namespace's default ServiceAccount before they can be created.
	wait_for "the default ServiceAccount" 60 kubectl get serviceaccount default -n default
}

build_pause_image() {
	log "building the pause image"
	(cd "$ROOT/hack/image" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -buildvcs=false -o "$BIN/pause" ./pause &&
		go run . -binary "$BIN/pause" -repo "$PAUSE_REPO" -tag "${PAUSE_IMAGE##*:}" -user 65535:65535 -nonroot=false \
			-o "$STATE/pause.tar" >/dev/null)
}

import_images() {
	local f
	for f in "$@"; do
		ctr -a "$SOCK" -n k8s.io images import "$f" >/dev/null
		log "imported $f"
	done
}

# ---- commands ---------------------------------------------------------------

up() {
	check_host
	mkdir -p "$STATE" "$RUN" "$LOGS"
	if running kube-apiserver && running kubelet && apiserver_ready 2>/dev/null; then
		echo "$KUBECONFIG_ADMIN"
		return 0
	fi
	local t0=$SECONDS
	install_packages
	prepare_binaries
	save_host_state
	setup_network
	write_pki
	write_configs
	start_control_plane
	start_node
	log "up in $((SECONDS - t0))s; kubeconfig: $KUBECONFIG_ADMIN"
	echo "$KUBECONFIG_ADMIN"
}

# Shims and containers outlive containerd: delete the pods through the API
# first (the kubelet stops them and frees their network), then stop the node,
# then kill what is left in the kubepods cgroups.
down() {
	[[ -d "$STATE" ]] || return 0
	local t0=$SECONDS
	if running kube-apiserver && running kubelet && apiserver_ready 2>/dev/null; then
		stop kube-controller-manager # so that nothing replaces the pods
		stop kube-scheduler
		kubectl delete pods --all --all-namespaces --grace-period=1 --wait=true --timeout=60s >/dev/null 2>&1 ||
			log "some pods did not go in time; killing them"
	fi
	local i
	for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
		[[ "${DAEMONS[$i]}" == kube-apiserver ]] && continue # after its clients
		[[ "${DAEMONS[$i]}" == etcd ]] && continue
		stop "${DAEMONS[$i]}"
	done
	kill_shims
	kill_cgroups
	stop kube-apiserver
	stop etcd
	unmount_under "$STATE"
	unmount_under /run/netns cni- # the pods' network namespaces, not the host's others
	teardown_network
	restore_host_state
	rm -rf "$STATE"
	log "down in $((SECONDS - t0))s"
}

# kill_shims: containerd-shim processes serving our containerd (their
# command line names our socket); nothing else is touched.
kill_shims() {
	local p
	for p in /proc/[0-9]*; do
		if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "-address $SOCK "; then
			kill -KILL "${p#/proc/}" 2>/dev/null || true
		fi
	done
}

# kill_cgroups: whatever still runs in the kubelet's cgroups, then the
# cgroups themselves (deepest first), in every v1 hierarchy.
kill_cgroups() {
	local dir pid cg
	for dir in /sys/fs/cgroup/*/kubepods; do
		[[ -d "$dir" ]] || continue
		for i in 1 2 3; do
			find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do
				kill -KILL "$pid" 2>/dev/null || true
			done
			sleep 0.2
		done
		# A frozen cgroup (the suite freezes leaders) keeps its processes: thaw it.
		find "$dir" -name freezer.state 2>/dev/null | while read -r cg; do echo THAWED >"$cg" 2>/dev/null || true; done
		find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
		[[ -d "$dir" ]] && log "could not remove $dir"
	done
	return 0
}

cmd=${1:-}
shift || true
case "$cmd" in
up) up ;;
down) down ;;
kubeconfig)
	running kube-apiserver || die "no cluster running under $STATE: run hack/cluster.sh up"
	echo "$KUBECONFIG_ADMIN"
	;;
import)
	running containerd || die "no cluster running under $STATE"
	import_images "$@"
	;;
with)
	(($#)) || die "usage: hack/cluster.sh with CMD..."
	was_up=false
	running kube-apiserver && was_up=true
	$was_up || trap down EXIT
	trap 'exit 130' INT TERM
	up >/dev/null
	DOCEXEC_TEST_KUBECONFIG=$KUBECONFIG_ADMIN DOCEXEC_TEST_NODE_IP=$NODE_IP DOCEXEC_CLUSTER_DIR=$STATE "$@"
	;;
*)
	sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
