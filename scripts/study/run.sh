#!/usr/bin/env bash
# The Zoology study (Arora et al. 2023, figure 2) with `anatomy search`: MQAR accuracy against
# model width d, one panel per sequence length, for the mixers of scripts/study/zoology.anat,
# each at several learning rates (the best kept per variant and cell) and several seeds (95%
# bootstrap intervals), with the no-recall floor on every plot. One `anatomy search` per
# (T, d, lr), in OUT/T<T>-d<d>-lr<lr>; each is durable: run this script again after a stop or
# `kill -9` and it resumes (finished trials are kept, the rest run).
#
# Two phases (docs/results.md, "The protocol"): (1) every rate at seed 0; (2) for each
# cell and variant, the rate seed 0 kept (scripts/study/analyse.py --best-lr) at seeds
# 1 .. SEEDS-1. So each variant gets a sweep of all LRS and SEEDS seeds at its kept rate:
# 5 trials per variant and cell instead of 9 (360 trials, not 648). FULL=1 runs every rate
# at every seed instead.
#
#   bash scripts/study/run.sh                 # the documented CPU run: about 1.7 h, 2 cores
#   PILOT=1 bash scripts/study/run.sh         # T=64, d=32 only: the protocol end to end
#   FULL=1 bash scripts/study/run.sh          # every rate at every seed (about 3 h)
#   SEARCH_ARGS="--executor ray --address HOST:PORT" WIDTHS="32 64 128 256" \
#     LENGTHS="64 128 256 512" VOCAB=8192 BUDGET=20M bash scripts/study/run.sh   # larger grid
#
# Settings (environment): OUT, LENGTHS, WIDTHS, LRS, SEEDS, VARIANTS (zoology.anat's fillers,
# comma-separated; default all 8), VOCAB, BATCH, BUDGET (training tokens per trial), LAYERS,
# WORKERS (local processes, one torch thread each), FULL, SEARCH_ARGS (passed to every
# search). Pairs follow Zoology: T / 16. Batch 8 because recall is learned in
# optimizer steps, not tokens: at 1M tokens softmax (T=64, d=32) reaches 0.995 at batch 8
# (1,953 steps), 0.72 at batch 16 and 0.24 (no recall) at batch 32 or 64.
set -euo pipefail
cd "$(dirname "$0")/../.."
ANATOMY=${ANATOMY:-.venv/bin/anatomy}
PYTHON=${PYTHON:-.venv/bin/python}
if [[ "${PILOT:-0}" == 1 ]]; then
  : "${OUT:=/tmp/study-pilot}" "${LENGTHS:=64}" "${WIDTHS:=32}"
fi
OUT=${OUT:-runs/study}
LENGTHS=${LENGTHS:-64 128 256}
WIDTHS=${WIDTHS:-32 64 128}
LRS=${LRS:-1e-3 3e-3 1e-2}
SEEDS=${SEEDS:-3}
VARIANTS=${VARIANTS:-softmax,linear_attention,ssd,based,gla,deltanet,gated_deltanet,fox}
VOCAB=${VOCAB:-64}
BATCH=${BATCH:-8}
BUDGET=${BUDGET:-1M}
LAYERS=${LAYERS:-2}
WORKERS=${WORKERS:-2}
FULL=${FULL:-0}
mkdir -p "$OUT"
start=$(date +%s)

search() {  # search T D LR SEEDS VARIANTS LOG: one (T, d, lr) search, resumable
  echo "== T=$1 d=$2 lr=$3 seeds=$4 $5"
  # shellcheck disable=SC2086 # SEARCH_ARGS is a list of words
  "$ANATOMY" search scripts/study/zoology.anat --task mqar --positions learned \
    --pick "mixer=$5" --dims "d=$2,h=1" --seq-len "$1" --pairs $(($1 / 16)) --vocab "$VOCAB" \
    --batch "$BATCH" --budget "$BUDGET" --layers "$LAYERS" --lr "$3" --seeds "$4" \
    --workers "$WORKERS" --no-progress --out "$OUT/T$1-d$2-lr$3" ${SEARCH_ARGS:-} > "$6"
}

sweep_seeds=1
[[ "$FULL" == 1 ]] && sweep_seeds=$SEEDS
for T in $LENGTHS; do
  for D in $WIDTHS; do
    for LR in $LRS; do
      search "$T" "$D" "$LR" "$sweep_seeds" "$VARIANTS" "$OUT/T$T-d$D-lr$LR.md"
    done
    if [[ "$FULL" != 1 && "$SEEDS" -gt 1 ]]; then
      kept=$("$PYTHON" scripts/study/analyse.py "$OUT" --best-lr "$T" "$D")
      for LR in $LRS; do  # the variants that kept this rate (compared as numbers)
        picked=$(awk -v lr="$LR" '$2 + 0 == lr + 0 {print $1}' <<< "$kept" | paste -sd, -)
        if [[ -n "$picked" ]]; then
          search "$T" "$D" "$LR" "$SEEDS" "$picked" "$OUT/T$T-d$D-lr$LR.seeds.md"
        fi
      done
    fi
  done
done
times > "$OUT/cpu_times.txt"  # this shell's, then its children's (the searches) user and system
echo "== study wall time: $(( $(date +%s) - start )) s; CPU time (user, system) of the searches:" \
  "$(tail -1 "$OUT/cpu_times.txt")"
"$PYTHON" scripts/study/analyse.py "$OUT"
