#!/usr/bin/env bash
# Run a throwaway PostgreSQL cluster on 127.0.0.1 for the `postgres` feature's tests.
#
#   scripts/postgres.sh start   start (or reuse) the cluster; prints
#                               export OFFSET_GUARD_POSTGRES=postgresql://...
#   scripts/postgres.sh env     prints that line for the running cluster (exit 1 if none)
#   scripts/postgres.sh status  says whether it runs (exit 0 running, 3 not running)
#   scripts/postgres.sh stop    stops the cluster it started (pg_ctl, then exactly the
#                               postmaster's PID) and removes its data directory;
#                               always exits 0 (safe in a trap)
#
# Typical use (bash):
#   eval "$(scripts/postgres.sh start)"; trap 'scripts/postgres.sh stop' EXIT
#
# Only the start/env line goes to stdout; everything else goes to stderr.
#
# The server binaries: $PG_BIN if set, else `pg_config --bindir`, else the newest
# /usr/lib/postgresql/*/bin. When none is found, `apt-get install postgresql-15`
# (as root only; otherwise an error says what to install).
#
# initdb and postgres refuse to run as root: as root, the cluster runs as the
# `postgres` system user (created, without a home or a login shell, if missing);
# otherwise as the calling user. The data directory is under the checkout
# ($OFFSET_GUARD_TOOLS/postgres/data, default .tools/, git-ignored), owned by that
# user. The server listens on 127.0.0.1 only (no Unix socket), on a free port,
# with trust authentication for loopback connections only (initdb's pg_hba.conf
# has host lines for 127.0.0.1/32 and ::1 only), fsync off: test data only.
#
# Env:
#   PG_PORT             port to listen on (default: a free port picked at start)
#   PG_BIN              directory with initdb, pg_ctl and postgres
#   OFFSET_GUARD_TOOLS  state/tools dir (default: <repo>/.tools); data, log, pid in
#                       $OFFSET_GUARD_TOOLS/postgres/
#   PG_START_TIMEOUT    seconds to wait for the server to accept connections (default: 30)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
tools="${OFFSET_GUARD_TOOLS:-$repo/.tools}"
state="$tools/postgres"
data="$state/data"
portfile="$state/port"
pidfile="$state/postmaster.pid"
logfile="$state/postgres.log"

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The user the server runs as, and how to run a command as that user.
server_user() {
  if [[ "$(id -u)" != 0 ]]; then id -un; return; fi
  if ! id postgres >/dev/null 2>&1; then
    log "creating system user postgres"
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres >&2
  fi
  printf 'postgres\n'
}

as_user() {
  local user="$1"; shift
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u "$user" -- "$@"
  else
    "$@"
  fi
}

find_bin() {
  local d
  if [[ -n "${PG_BIN:-}" ]]; then
    [[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] || die "PG_BIN=$PG_BIN has no initdb/pg_ctl"
    printf '%s\n' "$PG_BIN"; return
  fi
  if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir 2>/dev/null || true)"
    if [[ -n "$d" && -x "$d/initdb" && -x "$d/postgres" ]]; then printf '%s\n' "$d"; return; fi
  fi
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$d" && -x "$d/initdb" && -x "$d/postgres" ]]; then printf '%s\n' "$d"; return; fi
  [[ "$(id -u)" == 0 ]] || die "no PostgreSQL server binaries found: install postgresql-15 (Debian) or set PG_BIN"
  log "no PostgreSQL server binaries found: apt-get install postgresql-15"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 >&2; } \
    || die "apt-get install postgresql-15 failed"
  d=/usr/lib/postgresql/15/bin
  [[ -x "$d/initdb" ]] || die "postgresql-15 installed but $d/initdb is missing"
  printf '%s\n' "$d"
}

# The postmaster's PID if it is alive and is a postgres server on our data dir; else empty.
running_pid() {
  local pid cmd
  [[ -f "$pidfile" ]] || return 0
  pid="$(head -n 1 "$pidfile" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  alive "$pid" || return 0
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmd" == *postgres*"$data"* ]] || return 0
  printf '%s\n' "$pid"
}

# Running, and not a zombie (an exited process nobody reaped yet).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo Z)" != Z ]]
}

env_line() {
  printf "export OFFSET_GUARD_POSTGRES='postgresql://postgres@127.0.0.1:%s/postgres'\n" "$(cat "$portfile")"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
  local p i
  if [[ -n "${PG_PORT:-}" ]]; then printf '%s\n' "$PG_PORT"; return; fi
  for i in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 20000 ))
    if port_free "$p"; then printf '%s\n' "$p"; return; fi
  done
  die "no free port found"
}

start() {
  if [[ -n "$(running_pid)" ]]; then log "already running"; env_line; return; fi
  local bin user port
  bin="$(find_bin)"
  user="$(server_user)"
  mkdir -p "$state"
  rm -rf "$data"
  chown "$user" "$state"
  # The server user must reach the data dir's parents.
  local d="$state"
  while [[ "$d" != / ]]; do
    [[ -x "$d" ]] || die "$d is not searchable"
    d="$(dirname "$d")"
  done
  as_user "$user" "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=trust \
    -E UTF8 --locale=C --no-sync >"$logfile.initdb" 2>&1 || { cat "$logfile.initdb" >&2; die "initdb failed"; }
  port="$(pick_port)"
  printf '%s\n' "$port" >"$portfile"
  touch "$logfile"; chown "$user" "$logfile"
  as_user "$user" "$bin/pg_ctl" -D "$data" -l "$logfile" -w -t "${PG_START_TIMEOUT:-30}" \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c fsync=off -c max_connections=200" \
    start >&2 || { tail -n 20 "$logfile" >&2; die "pg_ctl start failed"; }
  cp "$data/postmaster.pid" "$pidfile"
  log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') running as $user on 127.0.0.1:$port (pid $(head -n 1 "$pidfile"), data $data)"
  env_line
}

stop() {
  local pid bin user
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    bin="$(find_bin)"
    user="$(stat -c %U "$data")"
    as_user "$user" "$bin/pg_ctl" -D "$data" -m fast -w -t 20 stop >&2 || true
    local i
    for i in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      log "pg_ctl did not stop pid $pid: SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
    fi
    log "stopped pid $pid"
  else
    log "not running"
  fi
  rm -rf "$data" "$pidfile" "$portfile"
  return 0
}

case "${1:-}" in
  start) start ;;
  stop) stop || true; exit 0 ;;
  env) [[ -n "$(running_pid)" ]] || die "not running"; env_line ;;
  status)
    if [[ -n "$(running_pid)" ]]; then log "running (pid $(running_pid))"; exit 0; fi
    log "not running"; exit 3 ;;
  *) die "usage: $0 start|stop|env|status" ;;
esac
