#!/usr/bin/env bash
# Run the test suite (installing first if this is a fresh clone). Extra arguments go to
# pytest, e.g. `bash scripts/test.sh -m slow` for the opt-in exhaustive runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh >&2
exec .venv/bin/python -m pytest -q "$@"
