"""Where the study's time goes, and how long it will take: CPU time per training step of each
variant of scripts/study/zoology.anat in each cell (T, d) of the grid, measured in one
process on one torch thread (CPU time, `time.process_time`, so that other jobs on a shared
machine inflate it little), and the whole study's wall time projected from it.

A trial is `steps = budget // (batch * T)` optimizer steps (forward, backward, gradient
clipping, fused AdamW; anatomy.search.train), then an evaluation on 256 held-out sequences;
a search adds a fixed cost (spawning its workers, importing torch, checking each variant at
initialisation, writing its leaderboard and plots). The projection schedules each search's
trials on `workers` single-threaded workers in run.sh's order (the two phases: every rate at
seed 0, then the kept rate at the other seeds) and adds up the searches.

    python scripts/study/step_costs.py --out step_costs.json             # measure (minutes)
    python scripts/study/step_costs.py --lengths 64 --widths 32 --steps 5  # a smoke run
    python scripts/study/step_costs.py --project step_costs.json         # project only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "zoology.anat"
VARIANTS = "softmax,linear_attention,ssd,based,gla,deltanet,gated_deltanet,fox"
SEARCH_OVERHEAD_S = 5.0   # CPU seconds per `anatomy search` besides its trials (measured)
TRIAL_OVERHEAD_S = 1.0    # per trial: building the model, the data, the first steps


def measure(seq_len: int, width: int, batch: int, variant: str, steps: int) -> dict:
    """CPU milliseconds per training step (after 3 warm-up steps) and CPU seconds of one
    evaluation, for one variant in one cell, at vocabulary 64 and T / 16 pairs."""
    import torch
    from torch.nn import functional as F

    from anatomy.search.mqar import IGNORE
    from anatomy.search.tasks import TaskSettings, make_task
    from anatomy.search.train import TrialSpec, build_model
    torch.set_num_threads(1)
    settings = TaskSettings("mqar", seq_len=seq_len, batch=batch, vocab=64, pairs=seq_len // 16)
    spec = TrialSpec(0, variant, str(TEMPLATE), TEMPLATE.read_text(), "zoology",
                     (("mixer", variant),), (("d", width), ("h", 1)), settings, 0, 0)
    task = make_task(settings)
    torch.manual_seed(0)
    model = build_model(spec, task.vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=True)
    data = torch.Generator().manual_seed(0)

    def step():
        tokens, labels = task.batch(data)
        scored = labels != IGNORE
        loss = F.cross_entropy(model(tokens, scored), labels[scored])
        loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(3):
        step()
    start = time.process_time()
    for _ in range(steps):
        step()
    step_ms = (time.process_time() - start) / steps * 1e3
    start = time.process_time()
    model.eval()
    task.evaluate(model)
    return {"T": seq_len, "d": width, "batch": batch, "variant": variant,
            "step_ms": round(step_ms, 2), "eval_s": round(time.process_time() - start, 2)}


def _makespan(durations: list[float], workers: int) -> float:
    """Wall time of trials handed in order to the first free of `workers` workers."""
    free = [0.0] * workers
    for d in durations:
        free[free.index(min(free))] += d
    return max(free)


def project(costs: list[dict], budget: int, lrs: int, seeds: int, workers: int,
            full: bool = False) -> dict:
    """CPU seconds and projected wall seconds of the study run.sh runs, from measured step
    costs (rows of `measure`). Phase 2 is counted with each cell's variants split over the
    rates as evenly as they can be (more searches, more idle workers: the slower case)."""
    cells: dict[tuple, list[dict]] = {}
    for row in costs:
        cells.setdefault((row["T"], row["d"]), []).append(row)
    cpu = wall = 0.0
    trials = 0
    per_cell = []
    for (seq_len, width), rows in sorted(cells.items()):
        trial_s = [budget // (r["batch"] * seq_len) * r["step_ms"] / 1e3 + r["eval_s"]
                   + TRIAL_OVERHEAD_S for r in rows]
        first = seeds if full else 1
        searches = [trial_s * first for _ in range(lrs)]
        if not full and seeds > 1:
            groups = [trial_s[i::lrs] for i in range(lrs)]
            searches += [[t for t in g for _ in range(seeds - 1)] for g in groups if g]
        cell_cpu = sum(sum(s) + SEARCH_OVERHEAD_S for s in searches)
        cell_wall = sum(_makespan(s, workers) + SEARCH_OVERHEAD_S for s in searches)
        cpu += cell_cpu
        wall += cell_wall
        trials += sum(len(s) for s in searches)
        per_cell.append({"T": seq_len, "d": width, "seconds_per_trial":
                         round(sum(trial_s) / len(trial_s), 1), "wall_s": round(cell_wall)})
    return {"trials": trials, "cpu_s": round(cpu), "wall_s": round(wall),
            "wall_h": round(wall / 3600, 2), "cells": per_cell}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--variants", default=VARIANTS, help="zoology.anat fillers, comma-separated")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="measured steps per variant and cell")
    p.add_argument("--out", type=Path, help="write the measured step costs here (JSON)")
    p.add_argument("--project", type=Path, help="project from these step costs; measure none")
    p.add_argument("--budget", type=float, default=1e6, help="training tokens per trial")
    p.add_argument("--lrs", type=int, default=3)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--full", action="store_true", help="every rate at every seed (FULL=1)")
    args = p.parse_args(argv)
    if args.project:
        costs = json.loads(args.project.read_text())["step_costs"]
    else:
        costs = []
        for seq_len in args.lengths:
            for width in args.widths:
                for variant in args.variants.split(","):
                    costs.append(measure(seq_len, width, args.batch, variant, args.steps))
                    print(json.dumps(costs[-1]), flush=True)
        if args.out:
            args.out.write_text(json.dumps({"step_costs": costs}, indent=1) + "\n")
    print(json.dumps(project(costs, int(args.budget), args.lrs, args.seeds, args.workers,
                             args.full), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
