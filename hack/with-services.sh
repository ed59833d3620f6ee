#!/usr/bin/env bash
# Runs a command with a private redis-server and PostgreSQL on loopback ports,
# installing the Debian packages first when they are missing, and stops both on
# exit. The servers' addresses reach the command as DOCEXEC_TEST_REDIS and
# DOCEXEC_TEST_POSTGRES (the integration tests read those).
#
#   hack/with-services.sh go test ./...
set -euo pipefail

log() { echo "with-services: $*" >&2; }

install_missing() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server redis-tools)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v kcat >/dev/null || missing+=(kcat)
  command -v gcc >/dev/null || missing+=(gcc) # go test -race needs cgo
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    log "not root: install ${missing[*]} with apt-get yourself"; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

# free_port N: the first port from N up that nothing listens on.
free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

install_missing

dir=$(mktemp -d /tmp/docexec-services.XXXXXX)
chmod 755 "$dir"
pgbin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cleanup() {
  [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
  [ -d "$dir/pg" ] && as_postgres "$pgbin/pg_ctl" -D "$dir/pg" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

redis_port=$(free_port "${DOCEXEC_REDIS_PORT:-6390}")
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"

pg_port=$(free_port "${DOCEXEC_POSTGRES_PORT:-5439}")
[ "$(id -u)" = 0 ] && chown postgres "$dir"
as_postgres "$pgbin/initdb" -D "$dir/pg" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
as_postgres "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w start \
  -o "-p $pg_port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=300" >/dev/null

for i in $(seq 50); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  [ "$i" = 50 ] && { log "redis-server did not answer; its log:"; cat "$dir/redis.log" >&2; exit 1; }
  sleep 0.1
done

export DOCEXEC_TEST_REDIS="127.0.0.1:$redis_port"
export DOCEXEC_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port/postgres?sslmode=disable"
log "redis on $DOCEXEC_TEST_REDIS, postgres on 127.0.0.1:$pg_port"
"$@"
