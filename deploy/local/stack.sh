#!/usr/bin/env bash
# The local test stack: real Kafka (Tansu), Prometheus, VictoriaMetrics, Alertmanager and an
# OpenSearch-API store (osmem-server), on 127.0.0.1, data in a temporary directory.
#
#   deploy/local/stack.sh install   install what is missing (idempotent), start nothing
#   deploy/local/stack.sh up        install if needed, start everything, wait until each answers
#   deploy/local/stack.sh down      stop everything and remove the data
#   deploy/local/stack.sh status    what is running
#   deploy/local/stack.sh env       print the environment the tests read (eval it)
#
# Installs: Debian packages prometheus, victoria-metrics, prometheus-alertmanager, kcat (apt);
# Tansu 0.6.0 from crates.io with deploy/tansu/tansu.patch (Kafka transactions: EndTxn,
# read_committed leaving aborted records out, transaction timeouts; fetches that start inside a
# record batch), built once with cargo into
# $DWCP_CACHE/bin/tansu-txn (about 10-17 minutes the first time, then reused until the patch
# changes); osmem-server from PyPI into the virtualenv $DWCP_CACHE/venv.
#
# Ports (override with the variables): Kafka 9092 (DWCP_KAFKA_PORT), Prometheus 9090,
# VictoriaMetrics 8428, Alertmanager 9093, OpenSearch API 9200.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DWCP_CACHE="${DWCP_CACHE:-$HOME/.cache/dwcp-monitor}"
STATE="$ROOT/.stack"
KAFKA_PORT="${DWCP_KAFKA_PORT:-9092}"
PROM_PORT="${DWCP_PROM_PORT:-9090}"
VM_PORT="${DWCP_VM_PORT:-8428}"
AM_PORT="${DWCP_AM_PORT:-9093}"
OS_PORT="${DWCP_OS_PORT:-9200}"
TANSU="$DWCP_CACHE/bin/tansu-txn"
VENV="$DWCP_CACHE/venv"

log() { printf '[stack] %s\n' "$*" >&2; }

need_root_apt() {
  local missing=()
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
  command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
  command -v kcat >/dev/null || missing+=(kcat)
  command -v curl >/dev/null || missing+=(curl)
  if ((${#missing[@]})); then
    log "apt: installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    # Services must not start at install: we start our own on loopback.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
      $sudo chmod +x /usr/sbin/policy-rc.d
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_tansu() {
  local src="$ROOT/deploy/tansu" stamp="$DWCP_CACHE/bin/tansu-txn.sha256" want
  want="$(cat "$src/tansu.patch" "$src/tansu-0.6.0/Cargo.toml" "$src/tansu-0.6.0/Cargo.lock" | sha256sum | cut -d' ' -f1)"
  if [ -x "$TANSU" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  log "building Tansu 0.6.0 with deploy/tansu/tansu.patch (about 10-17 minutes, once; cached in $DWCP_CACHE/bin)"
  local build="$DWCP_CACHE/tansu-build"
  mkdir -p "$build"
  rm -rf "${build:?}/crates" "${build:?}/src" "${build:?}/Cargo.toml" "${build:?}/Cargo.lock"
  cp -r "$src/tansu-0.6.0/." "$build/"
  # The two patched crates' sources from crates.io, as cargo downloads them for the lock file.
  (cd "$build" && cargo fetch --locked -q) >&2
  mkdir -p "$build/crates"
  local c dir
  for c in tansu-broker tansu-storage; do
    dir="$(cd "$build" && cargo metadata --locked --offline --format-version 1 |
      python3 -c 'import json, sys; m = json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"] == sys.argv[1] and p["version"] == "0.6.0").rsplit("/", 1)[0])' "$c")"
    cp -r "$dir" "$build/crates/$c-0.6.0"
  done
  patch -s -p1 -d "$build/crates" <"$src/tansu.patch"
  printf '\n[patch.crates-io]\ntansu-broker = { path = "crates/tansu-broker-0.6.0" }\ntansu-storage = { path = "crates/tansu-storage-0.6.0" }\n' >>"$build/Cargo.toml"
  (cd "$build" && cargo build --release --offline --features dynostore --bin tansu) >&2
  mkdir -p "$DWCP_CACHE/bin"
  cp "$build/target/release/tansu" "$TANSU.new"
  mv "$TANSU.new" "$TANSU"
  echo "$want" >"$stamp"
}

install_osmem() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import osmem_server' 2>/dev/null; then
    return
  fi
  log "pip: installing osmem-server into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q osmem-server
}

osmem_bin() {
  "$VENV/bin/python" -c 'import osmem_server; print(osmem_server.resolve_binary())'
}

install() {
  mkdir -p "$DWCP_CACHE"
  need_root_apt
  install_tansu
  install_osmem
}

wait_http() { # name url
  local i
  for i in $(seq 1 150); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  log "$1 did not answer at $2; its log:"
  tail -n 30 "$DATA/$1.log" >&2 || true
  return 1
}

wait_tcp() { # name port
  local i
  for i in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  log "$1 did not listen on $2; its log:"
  tail -n 30 "$DATA/$1.log" >&2 || true
  return 1
}

start() { # name cmd...
  local name="$1"
  shift
  (cd "$DATA" && exec setsid "$@" >"$DATA/$name.log" 2>&1) &
  echo $! >"$DATA/$name.pid"
}

write_env() {
  cat >"$STATE/env" <<EOF
export DWCP_TEST_KAFKA=127.0.0.1:$KAFKA_PORT
export DWCP_TEST_PROMETHEUS=http://127.0.0.1:$PROM_PORT
export DWCP_TEST_VICTORIAMETRICS=http://127.0.0.1:$VM_PORT
export DWCP_TEST_ALERTMANAGER=http://127.0.0.1:$AM_PORT
export DWCP_TEST_OPENSEARCH=http://127.0.0.1:$OS_PORT
export DWCP_TEST_STACK_DATA=$DATA
export DWCP_TEST_OSMEM_BIN=$(osmem_bin)
EOF
}

up() {
  if [ -f "$STATE/data" ] && [ -d "$(cat "$STATE/data")" ]; then
    log "already up (data in $(cat "$STATE/data")); run down first to restart"
    cat "$STATE/env"
    return
  fi
  install
  mkdir -p "$STATE"
  DATA="$(mktemp -d "${TMPDIR:-/tmp}/dwcp-stack.XXXXXX")"
  echo "$DATA" >"$STATE/data"
  mkdir -p "$DATA/prometheus" "$DATA/victoria" "$DATA/alertmanager"

  start tansu "$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine "memory://tansu/?maintenance_interval=5s"

  cat >"$DATA/prometheus.yml" <<EOF
global:
  scrape_interval: 15s
  evaluation_interval: 15s
EOF
  start prometheus prometheus --config.file="$DATA/prometheus.yml" --storage.tsdb.path="$DATA/prometheus" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --web.enable-remote-write-receiver --web.enable-admin-api

  start victoria-metrics victoria-metrics -httpListenAddr="127.0.0.1:$VM_PORT" -storageDataPath="$DATA/victoria" \
    -search.latencyOffset=0s -retentionPeriod=100y

  cat >"$DATA/alertmanager.yml" <<EOF
route:
  receiver: default
receivers:
  - name: default
EOF
  start alertmanager prometheus-alertmanager --config.file="$DATA/alertmanager.yml" \
    --storage.path="$DATA/alertmanager" --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address=

  start osmem "$(osmem_bin)" -addr "127.0.0.1:$OS_PORT" -no-stdin-watch -no-ja

  wait_tcp tansu "$KAFKA_PORT"
  wait_http prometheus "http://127.0.0.1:$PROM_PORT/-/ready"
  wait_http victoria-metrics "http://127.0.0.1:$VM_PORT/health"
  wait_http alertmanager "http://127.0.0.1:$AM_PORT/-/ready"
  wait_http osmem "http://127.0.0.1:$OS_PORT/"
  write_env
  log "up: data in $DATA"
  cat "$STATE/env"
}

down() {
  if [ ! -f "$STATE/data" ]; then
    log "not up"
    return
  fi
  DATA="$(cat "$STATE/data")"
  local f pid
  for f in "$DATA"/*.pid; do
    [ -e "$f" ] || continue
    pid="$(cat "$f")"
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
  done
  sleep 0.5
  for f in "$DATA"/*.pid; do
    [ -e "$f" ] || continue
    pid="$(cat "$f")"
    kill -9 -- "-$pid" 2>/dev/null || true
  done
  rm -rf "$DATA" "$STATE/data" "$STATE/env"
  log "down"
}

status() {
  if [ ! -f "$STATE/data" ]; then
    echo "not up"
    return
  fi
  DATA="$(cat "$STATE/data")"
  local f name
  for f in "$DATA"/*.pid; do
    name="$(basename "$f" .pid)"
    if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$name: running"; else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  status) status ;;
  env) cat "$STATE/env" ;;
  *)
    echo "usage: $0 install|up|down|status|env" >&2
    exit 2
    ;;
esac
