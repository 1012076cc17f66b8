"""Leaderboard aggregation against hand-computed values, and its files."""

from __future__ import annotations

import csv
import io
import json

import pytest

from anatomy.search.leaderboard import aggregate, to_csv, to_json, to_markdown


def variant(key, name, members=None, excluded=None):
    return {"key": key, "name": name, "members": members or [name], "excluded": excluded,
            "choice": []}


def trial(key, seed, status, metric=None, loss=None, seconds=1.0, error=None):
    return {"variant": key, "seed": seed, "status": status, "metric": metric,
            "eval_loss": loss, "seconds": seconds, "params": 100, "error": error, "curve": []}


VARIANTS = [variant("a", "A"), variant("b", "B", ["B", "B2"]), variant("c", "C"),
            variant("d", "D", excluded="not causal"), variant("e", "E")]
TRIALS = [
    trial("a", 0, "done", 0.5, 2.0, 2.0), trial("a", 1, "done", 0.7, 1.0, 4.0),
    trial("a", 2, "diverged", error="loss nan at step 3"),
    trial("b", 0, "done", 0.9, 0.5), trial("b", 1, "done", 0.6, 1.5), trial("b", 2, "done", 0.9, 1.0),
    trial("c", 0, "diverged", error="loss inf at step 0"),
    trial("e", 0, "pending"),
]


def test_aggregation_by_hand():
    rows = {r.name: r for r in aggregate(VARIANTS, TRIALS, higher_is_better=True)}
    a, b = rows["A"], rows["B"]
    # A: seeds 0.5, 0.7 -> mean 0.6; sample std sqrt(((-.1)^2 + .1^2) / 1) = 0.141421...
    assert a.mean == pytest.approx(0.6, abs=1e-12)
    assert a.std == pytest.approx(0.1414213562, abs=1e-9)
    assert (a.min, a.max, a.done, a.diverged, a.seeds) == (0.5, 0.7, 2, 1, 3)
    assert a.eval_loss == pytest.approx(1.5) and a.seconds == pytest.approx(3.0)
    # B: 0.9, 0.6, 0.9 -> mean 0.8; deviations .1, -.2, .1 -> sqrt(0.06 / 2) = 0.173205...
    assert b.mean == pytest.approx(0.8, abs=1e-12)
    assert b.std == pytest.approx(0.1732050808, abs=1e-9)
    assert b.same_as == ["B2"]
    assert rows["C"].mean is None and rows["C"].note.startswith("diverged: loss inf")
    assert rows["D"].note == "excluded: not causal"
    assert rows["E"].note == "1 trials to run"


def test_ranking_follows_the_metric_direction():
    up = aggregate(VARIANTS, TRIALS, higher_is_better=True)
    assert [r.name for r in up] == ["B", "A", "C", "E", "D"]
    assert [r.rank for r in up] == [1, 2, None, None, None]
    down = aggregate(VARIANTS, TRIALS, higher_is_better=False)
    assert [r.name for r in down][:2] == ["A", "B"]


def test_single_seed_has_no_std():
    rows = aggregate([variant("a", "A")], [trial("a", 0, "done", 0.3, 1.0)], True)
    assert rows[0].std is None and rows[0].mean == 0.3


def test_files_carry_the_rows():
    rows = aggregate(VARIANTS, TRIALS, higher_is_better=True)
    md = to_markdown(rows, "accuracy", True)
    assert "| 1 | B | 0.8000 | 0.1732 | 0.6000 | 0.9000 | 3 / 3 | 0 |" in md
    assert "same as B2" in md and "excluded: not causal" in md
    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [r["name"] for r in table] == ["B", "A", "C", "E", "D"]
    assert float(table[1]["mean"]) == pytest.approx(0.6)
    data = json.loads(to_json(rows, "accuracy", True, {"budget": 10}))
    assert data["budget"] == 10 and data["rows"][0]["name"] == "B"


def test_bootstrap_interval_and_the_floor():
    from anatomy.search.leaderboard import bootstrap_ci
    # resampled means of [0, 1]: 0 (1/4), 0.5 (1/2), 1 (1/4): the 95% interval is [0, 1]
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3))
    low, high = bootstrap_ci([0.9, 0.6, 0.9])
    assert 0.6 <= low < 0.8 < high <= 0.9
    rows = aggregate(VARIANTS, TRIALS, higher_is_better=True)
    b = next(r for r in rows if r.name == "B")
    assert (b.ci_low, b.ci_high) == bootstrap_ci([0.9, 0.6, 0.9])
    md = to_markdown(rows, "accuracy", True, floor=0.25)
    assert "no-recall floor: 0.2500" in md and "smoke test" not in md  # B: 0.8 > 0.35
    assert "smoke test: no variant clears" in to_markdown(rows, "accuracy", True, floor=0.75)
