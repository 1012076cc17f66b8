#!/usr/bin/env bash
# Install everything anatomy needs into ./.venv: system graphviz, torch (CPU build first,
# so no multi-GB CUDA wheel is pulled in), triton, and the package with its test extras.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dot >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing graphviz (system package)..."
    (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) \
      || echo "warning: could not install graphviz; rendering will explain how" >&2
  else
    echo "note: graphviz's dot not found; install it for rendering (apt-get install graphviz)" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv..."
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  echo "installing torch (CPU)..."
  "$VPY" -m pip install -q --upgrade pip >/dev/null
  "$VPY" -m pip install -q "torch==2.13.0"
fi
if ! "$VPY" -c "import anatomy, triton, hypothesis, pytest" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.anatomy-installed ]; then
  echo "installing anatomy and its dependencies..."
  "$VPY" -m pip install -q -e ".[test,gpu]"
  touch .venv/.anatomy-installed
fi
