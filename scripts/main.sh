#!/usr/bin/env bash
# The main job: install everything, then run anatomy over the whole zoo.
# Today that is parsing and type-checking every anatomy; compiling, proving, rendering and
# searching join as those capabilities land.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
echo "== check: parse and type-check every zoo anatomy"
.venv/bin/anatomy check zoo/*.anat
