#!/usr/bin/env bash
# Install everything anatomy needs into ./.venv: system graphviz (rendering) and chromium
# (the gallery's screenshot test; ~300 MB, ~16 s from a warm apt cache; set
# ANATOMY_NO_CHROMIUM=1 to skip it and that test), torch (CPU build first, so no
# multi-GB CUDA wheel is pulled in), triton, the package with its test extras, and the
# peers its tests compare against (fla-core).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dot >/dev/null 2>&1 || missing+=(graphviz)
if [ -z "${ANATOMY_NO_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  missing+=(chromium)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${missing[*]}..."
    # fonts-liberation: Helvetica-compatible metrics for dot's layout and the browser
    (apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" \
      fonts-liberation >/dev/null) || echo "warning: could not install ${missing[*]}; rendering explains how \
to install graphviz, and the screenshot test is skipped without chromium" >&2
  else
    echo "note: not installed: ${missing[*]} (apt-get install ${missing[*]}); rendering" \
         "needs graphviz's dot, the gallery screenshot test needs chromium" >&2
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
if ! "$VPY" -c "import anatomy, triton, hypothesis, pytest, matplotlib" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.anatomy-installed ]; then
  echo "installing anatomy and its dependencies..."
  "$VPY" -m pip install -q -e ".[test,gpu,plots]"
  touch .venv/.anatomy-installed
fi
# The peers the tests and benches compare against (fla-core's pure-PyTorch references, the
# `bench` extra): --no-deps, so it cannot replace the pinned CPU torch. Without it those
# tests are skipped, saying why, and the benches leave the fla peers out, saying so.
if ! "$VPY" -c "import fla, einops" >/dev/null 2>&1; then
  echo "installing the test peers (fla-core, einops)..."
  "$VPY" -m pip install -q --no-deps "fla-core==0.6.0" "einops>=0.7" \
    || echo "warning: could not install fla-core; the tests against it are skipped" >&2
fi
