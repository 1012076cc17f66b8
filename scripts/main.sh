#!/usr/bin/env bash
# The main job: install everything, then run anatomy over the whole zoo: parse and check
# every anatomy, compile each to a PyTorch module and run it once, prove SSD equal to masked
# linear attention (and check the saved proof), and draw the gallery (site/index.html:
# every anatomy's picture, source and summary). Searching joins as it lands.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
echo "== check: parse and type-check every zoo anatomy"
.venv/bin/anatomy check zoo/*.anat
echo "== compile: every zoo anatomy to an nn.Module, run once on random inputs (T=64)"
.venv/bin/anatomy compile zoo/*.anat --run --seq 64
echo "== prove: SSD's recurrence = masked linear attention with the 1-semiseparable mask"
mkdir -p site
.venv/bin/anatomy prove zoo/forms.anat:ssm_core zoo/cores.anat:ssd_core \
  --json site/ssd-proof.json --svg site/ssd-proof
.venv/bin/anatomy verify-proof site/ssd-proof.json
echo "== render: the gallery of every zoo anatomy -> site/index.html"
.venv/bin/anatomy render zoo/ -o site/
