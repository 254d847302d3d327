#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: Fashion-MNIST from Debian, a virtualenv in .venv with the
# pinned requirements, and this package installed in it (editable). Sourced by main.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DATA=/usr/share/datasets/fashion-mnist
if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ]; then
  echo "setup: installing Debian's dataset-fashion-mnist" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
    || echo "setup: warning: could not install dataset-fashion-mnist (need root and apt)" >&2
fi

# Reinstall only when requirements.txt or pyproject.toml changed since the last set-up.
stamp=.venv/.setup-stamp
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: creating .venv and installing requirements (about 7 minutes the first time: torch, ExecuTorch, LiteRT, OpenVINO, ...)" >&2
  [ -x .venv/bin/python ] || python3 -m venv .venv
  log=$(mktemp)
  if ! { .venv/bin/python -m pip install -q -r requirements.txt \
         && .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . ; } >"$log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$log" >&2
    echo "setup: pip install failed (log above)" >&2
    exit 1
  fi
  rm -f "$log"
  echo "$want" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
