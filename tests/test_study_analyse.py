"""scripts/study/analyse.py on a study folder made by hand: per (variant, T, d) the learning
rate with the best mean over the seeds every rate has (the sweep's) is kept, with all of that
rate's seeds, their bootstrap interval and the floor of its sequence length; diverged seeds
count as accuracy 0. `--best-lr T D` prints the kept rates that run.sh's second phase runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from anatomy.search.leaderboard import bootstrap_ci
from anatomy.search.store import SearchStore
from anatomy.search.train import TrialResult

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "study" / "analyse.py"


def load_analyse():
    spec = importlib.util.spec_from_file_location("study_analyse", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def search(folder: Path, seq_len: int, width: int, lr: float, scores: dict, floor: float):
    store = SearchStore(folder / "search.db", {"task": {"seq_len": seq_len},
                                               "load_dims": {"d": width}, "lr": lr})
    for name, metrics in scores.items():
        store.add_variant(name, name, [], [name])
        store.add_trials(name, range(len(metrics)))
    for trial, variant, seed in store.claim(100):
        metric = scores[variant][seed]
        store.finish(trial, TrialResult("diverged", seconds=2.0) if metric is None
                     else TrialResult("done", metric=metric, seconds=2.0))
    store.close()
    (folder / "leaderboard.json").write_text(json.dumps({"floor": floor}))


def test_best_rate_per_cell(tmp_path):
    search(tmp_path / "a", 64, 32, 1e-3, {"soft": [0.5, 0.6, 0.7], "lin": [0.3, 0.3, 0.3]}, .25)
    search(tmp_path / "b", 64, 32, 1e-2, {"soft": [1.0, 0.9, None], "lin": [0.2, 0.2, 0.2]}, .25)
    search(tmp_path / "c", 128, 32, 1e-3, {"soft": [0.1, 0.2, 0.3]}, 0.125)
    analyse = load_analyse()
    summary = analyse.summarise(tmp_path)
    rows = {(r["variant"], r["seq_len"]): r for r in summary["rows"]}
    soft = rows[("soft", 64)]  # 1e-3: mean 0.6; 1e-2: (1.0 + 0.9 + 0) / 3 = 0.633
    assert soft["lr"] == 1e-2 and soft["per_seed"] == [1.0, 0.9, 0.0]
    assert soft["mean"] == pytest.approx(1.9 / 3)
    assert (soft["ci_low"], soft["ci_high"]) == bootstrap_ci([1.0, 0.9, 0.0])
    assert rows[("lin", 64)]["lr"] == 1e-3 and rows[("lin", 64)]["mean"] == pytest.approx(0.3)
    assert rows[("soft", 128)]["mean"] == pytest.approx(0.2)
    assert summary["floors"] == {64: 0.25, 128: 0.125}
    assert summary["trials"] == {"planned": 15, "finished": 15}
    # every trial took 2 s, the diverged one too
    assert summary["seconds_by_cell"] == [
        {"seq_len": 64, "d": 32, "trials": 12, "mean": 2.0, "min": 2.0, "max": 2.0},
        {"seq_len": 128, "d": 32, "trials": 3, "mean": 2.0, "min": 2.0, "max": 2.0}]
    assert analyse.main([str(tmp_path)]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "| 64 | 0.2500 | 32 | soft | 0.01 | 0.6333 |" in text
    low, high = bootstrap_ci([1.0, 0.9, 0.0])
    assert "| variant | T=64, d=32 (floor 0.250) | T=128, d=32 (floor 0.125) |" in text
    assert f"| soft | 0.633 ({low:.3f}–{high:.3f}) | 0.200 (" in text
    assert "| lin | 0.300 (0.300–0.300) | – |" in text
    assert "| 64 | 32 | 12 | 2.0 | 2.0 | 2.0 |" in text


def test_sweep_at_one_seed_then_the_kept_rate(tmp_path, capsys):
    """run.sh's protocol: every rate at seed 0, the other seeds at the kept rate only. The
    rate is chosen on seed 0 (0.8 > 0.7), not on unequal seed sets (0.9 would pick 1e-2)."""
    search(tmp_path / "a", 64, 32, 1e-3, {"soft": [0.8]}, 0.25)
    search(tmp_path / "b", 64, 32, 1e-2, {"soft": [0.7, 1.0, 1.0]}, 0.25)
    analyse = load_analyse()
    (row,) = analyse.summarise(tmp_path)["rows"]
    assert row["lr"] == 1e-3 and row["per_seed"] == [0.8] and row["sweep_seeds"] == [0]
    assert row["by_lr"] == {"0.001": pytest.approx(0.8), "0.01": pytest.approx(0.7)}
    assert analyse.main([str(tmp_path), "--best-lr", "64", "32"]) == 0
    assert capsys.readouterr().out == "soft 0.001\n"
    assert analyse.main([str(tmp_path), "--best-lr", "128", "32"]) == 0
    assert capsys.readouterr().out == ""


def test_step_costs_projection():
    """scripts/study/step_costs.py's projection, worked by hand: 2 variants of 1 s and 2 s
    of steps (+ 1 s per trial), 3 rates, 3 seeds, 2 workers, 5 s per search."""
    spec = importlib.util.spec_from_file_location("step_costs", SCRIPT.parent / "step_costs.py")
    costs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(costs)
    assert (costs.TRIAL_OVERHEAD_S, costs.SEARCH_OVERHEAD_S) == (1.0, 5.0)
    rows = [{"T": 64, "d": 32, "batch": 8, "variant": v, "step_ms": ms, "eval_s": 0.0}
            for v, ms in (("a", 10.0), ("b", 20.0))]
    budget = 100 * 8 * 64  # 100 steps: trials of 2 s and 3 s
    # phase 1: 3 searches [2, 3] (3 s + 5 s each); phase 2: [2, 2] and [3, 3] (2 + 5, 3 + 5)
    assert costs.project(rows, budget, 3, 3, 2) == {
        "trials": 10, "cpu_s": 50, "wall_s": 39, "wall_h": 0.01,
        "cells": [{"T": 64, "d": 32, "seconds_per_trial": 2.5, "wall_s": 39}]}
    # every rate at every seed: 3 searches of [2, 3, 2, 3, 2, 3], makespan 9 on 2 workers
    full = costs.project(rows, budget, 3, 3, 2, full=True)
    assert (full["trials"], full["cpu_s"], full["wall_s"]) == (18, 60, 42)
