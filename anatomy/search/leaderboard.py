"""The leaderboard of a search: one row per variant, aggregated over its seeds, ranked by the
task's metric; written as markdown, CSV and JSON.

A variant's score is the mean of its finished seeds' metrics, with the sample standard
deviation (n - 1 in the denominator; none for a single seed), the range, and a 95%
percentile-bootstrap confidence interval of the mean (`bootstrap_ci`; with 3 seeds it can
only take a few values: read it as a range, not a test). Diverged and failed seeds are
counted, never averaged in. A recall task's no-recall floor heads the markdown. Variants rank by mean score; variants with no
finished seed come after, then those excluded before training (with the reason).
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import asdict, dataclass, field

FLOOR_MARGIN = 0.1  # a recall score this far above the no-recall floor shows recall


@dataclass
class Row:
    """One variant's line of the leaderboard."""

    rank: int | None
    name: str
    key: str
    seeds: int = 0              # trials planned
    done: int = 0
    diverged: int = 0
    failed: int = 0
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    ci_low: float | None = None   # 95% bootstrap interval of the mean over seeds
    ci_high: float | None = None
    eval_loss: float | None = None
    params: int | None = None
    seconds: float | None = None  # mean wall time of a finished trial
    same_as: list[str] = field(default_factory=list)  # fillings in the same canonical class
    note: str = ""


def aggregate(variants: list[dict], trials: list[dict], higher_is_better: bool) -> list[Row]:
    """Rows for `variants` (SearchStore.variants()) from their `trials` (SearchStore.trials())."""
    by_variant: dict[str, list[dict]] = {}
    for t in trials:
        by_variant.setdefault(t["variant"], []).append(t)
    rows = []
    for v in variants:
        ts = by_variant.get(v["key"], [])
        row = Row(None, v["name"], v["key"], seeds=len(ts), same_as=v["members"][1:])
        done = [t for t in ts if t["status"] == "done"]
        row.done, row.diverged = len(done), sum(t["status"] == "diverged" for t in ts)
        row.failed = sum(t["status"] == "failed" for t in ts)
        if done:
            scores = [t["metric"] for t in done]
            row.mean = sum(scores) / len(scores)
            row.std = _sample_std(scores)
            row.min, row.max = min(scores), max(scores)
            row.ci_low, row.ci_high = bootstrap_ci(scores)
            row.eval_loss = sum(t["eval_loss"] for t in done) / len(done)
            row.seconds = sum(t["seconds"] for t in done) / len(done)
        row.params = next((t["params"] for t in ts if t["params"]), None)
        if v["excluded"]:
            row.note = f"excluded: {v['excluded']}"
        elif not done and (row.diverged or row.failed):
            errors = [t["error"] for t in ts if t["error"]]
            row.note = ("diverged" if row.diverged else "failed") + \
                (f": {errors[0]}" if errors else "")
        elif row.done < row.seeds:
            row.note = f"{row.seeds - row.done - row.diverged - row.failed} trials to run"
        rows.append(row)
    sign = -1 if higher_is_better else 1
    scored = sorted((r for r in rows if r.mean is not None), key=lambda r: sign * r.mean)
    for i, r in enumerate(scored, 1):
        r.rank = i
    rest = [r for r in rows if r.mean is None]
    rest.sort(key=lambda r: r.note.startswith("excluded"))
    return scored + rest


def bootstrap_ci(xs: list[float], level: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `xs`: resample `xs` with replacement
    `resamples` times (seeded: the same interval every time), take the means' quantiles at
    (1 - level) / 2 and (1 + level) / 2 (nearest rank)."""
    rng = random.Random(seed)
    n = len(xs)
    means = sorted(sum(rng.choice(xs) for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    return means[int(tail * (resamples - 1))], means[round((1 - tail) * (resamples - 1))]


def _sample_std(xs: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _num(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def to_markdown(rows: list[Row], metric: str, higher_is_better: bool,
                floor: float | None = None) -> str:
    arrow = "higher is better" if higher_is_better else "lower is better"
    lines = [(f"| rank | variant | {metric} (mean) | std | min | max | seeds ok / run | "
              "diverged | params | s / trial | 95% CI | note |"),
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        note = r.note
        if r.same_as:
            note = (note + "; " if note else "") + "same as " + ", ".join(r.same_as)
        lines.append(f"| {r.rank or '–'} | {r.name} | {_num(r.mean)} | {_num(r.std)} | "
                     f"{_num(r.min)} | {_num(r.max)} | {r.done} / {r.seeds} | {r.diverged} | "
                     f"{r.params if r.params is not None else '–'} | {_num(r.seconds, 1)} | "
                     f"{_interval(r)} | {note} |")
    head = f"{metric}: {arrow}; std is the sample standard deviation across seeds"
    if floor is not None:
        head += (f"\n\nno-recall floor: {floor:.4f} (the best {metric} without recall: "
                 "guessing among the pairs' values)")
        best = max((r.mean for r in rows if r.mean is not None), default=None)
        if best is None or best < floor + FLOOR_MARGIN:
            head += (f"\n\nsmoke test: no variant clears the no-recall floor by "
                     f"{FLOOR_MARGIN}; at this budget the ranking says nothing about recall")
    return head + "\n\n" + "\n".join(lines) + "\n"


def _interval(r: Row) -> str:
    if r.ci_low is None or r.done < 2:
        return "–"
    return f"{r.ci_low:.4f}–{r.ci_high:.4f}"


def to_csv(rows: list[Row]) -> str:
    out = io.StringIO()
    names = [f for f in asdict(rows[0])] if rows else list(Row.__dataclass_fields__)
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        d = asdict(r)
        d["same_as"] = ";".join(d["same_as"])
        writer.writerow(d)
    return out.getvalue()


def to_json(rows: list[Row], metric: str, higher_is_better: bool, extra: dict) -> str:
    return json.dumps({"metric": metric, "higher_is_better": higher_is_better, **extra,
                       "rows": [asdict(r) for r in rows]}, indent=2) + "\n"
