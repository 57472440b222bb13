#!/usr/bin/env bash
# Make .venv with the given extras (default: onnx,dev). Idempotent: re-installs only when
# pyproject.toml or the extras changed, so a second run takes a second.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh onnx,dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-onnx,dev}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pick_python() {
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 &&
       "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  echo "edgesight needs Python 3.11 or newer (python3 --version says: $(python3 --version 2>&1))" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  py=$(pick_python)
  if ! "$py" -m venv .venv 2>/dev/null; then
    # Debian and Raspberry Pi OS ship venv separately.
    echo "installing python3-venv (Debian package)" >&2
    as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv
    rm -rf .venv && "$py" -m venv .venv
  fi
fi

stamp=".venv/.edgesight-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing edgesight[$extras] into .venv (log: .venv/pip.log)" >&2
  # Quiet unless it fails: the build backend's warnings are noise to a newcomer.
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e ".[$extras]"; } > .venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
