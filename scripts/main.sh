#!/usr/bin/env bash
# The main job: install everything, then run anatomy over the whole zoo: parse and check
# every anatomy, compile each to a PyTorch module and run it once, and draw the gallery
# (site/index.html: every anatomy's picture, source and summary). Proving and searching join
# as those capabilities land.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
echo "== check: parse and type-check every zoo anatomy"
.venv/bin/anatomy check zoo/*.anat
echo "== compile: every zoo anatomy to an nn.Module, run once on random inputs (T=64)"
.venv/bin/anatomy compile zoo/*.anat --run --seq 64
echo "== render: the gallery of every zoo anatomy -> site/index.html"
.venv/bin/anatomy render zoo/ -o site/
