#!/usr/bin/env bash
# The Zoology study (Arora et al. 2023, figure 2) with `anatomy search`: MQAR accuracy against
# model width d, one panel per sequence length, for the mixers of scripts/study/zoology.anat
# (softmax attention, causal linear attention, SSD, Based), each at several learning rates
# (the best kept per variant and cell) and several seeds (95% bootstrap intervals), with the
# no-recall floor on every plot. One `anatomy search` per (T, d, lr), in OUT/T<T>-d<d>-lr<lr>;
# each is durable: run this script again after a stop or `kill -9` and it resumes.
#
#   bash scripts/study/run.sh                 # the documented CPU run (docs/results.md)
#   PILOT=1 bash scripts/study/run.sh         # a few minutes: T=64, d=32, one seed, 2 rates
#   SEARCH_ARGS="--executor ray --address HOST:PORT" WIDTHS="32 64 128 256" \
#     LENGTHS="64 128 256 512" VOCAB=8192 BUDGET=20M bash scripts/study/run.sh   # larger grid
#
# Settings (environment): OUT, LENGTHS, WIDTHS, LRS, SEEDS, VOCAB, BATCH, BUDGET (training
# tokens per trial), LAYERS, WORKERS (local processes), SEARCH_ARGS (passed to every search).
# Pairs follow Zoology: T / 16. Then `python scripts/study/analyse.py OUT` (run at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
ANATOMY=${ANATOMY:-.venv/bin/anatomy}
PYTHON=${PYTHON:-.venv/bin/python}
if [[ "${PILOT:-0}" == 1 ]]; then
  : "${OUT:=runs/study-pilot}" "${LENGTHS:=64}" "${WIDTHS:=32}" "${LRS:=3e-3 1e-2}" "${SEEDS:=1}"
  : "${BUDGET:=300k}"
fi
OUT=${OUT:-runs/study}
LENGTHS=${LENGTHS:-64 128 256}
WIDTHS=${WIDTHS:-32 64 128}
LRS=${LRS:-1e-3 3e-3 1e-2}
SEEDS=${SEEDS:-3}
VOCAB=${VOCAB:-64}
BATCH=${BATCH:-8}
BUDGET=${BUDGET:-600k}
LAYERS=${LAYERS:-2}
WORKERS=${WORKERS:-2}
mkdir -p "$OUT"
start=$(date +%s)
for T in $LENGTHS; do
  for D in $WIDTHS; do
    for LR in $LRS; do
      echo "== T=$T d=$D lr=$LR"
      # shellcheck disable=SC2086 # SEARCH_ARGS is a list of words
      "$ANATOMY" search scripts/study/zoology.anat --task mqar --positions learned \
        --dims "d=$D,h=1" --seq-len "$T" --pairs $((T / 16)) --vocab "$VOCAB" \
        --batch "$BATCH" --budget "$BUDGET" --layers "$LAYERS" --lr "$LR" --seeds "$SEEDS" \
        --workers "$WORKERS" --no-progress --out "$OUT/T$T-d$D-lr$LR" ${SEARCH_ARGS:-} \
        > "$OUT/T$T-d$D-lr$LR.md"
    done
  done
done
echo "== study wall time: $(( $(date +%s) - start )) s"
"$PYTHON" scripts/study/analyse.py "$OUT"
