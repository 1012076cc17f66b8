"""Analyse the Zoology study (scripts/study/run.sh): one `anatomy search` per (sequence
length T, width d, learning rate), each holding every variant and seed.

For each (variant, T, d) the learning rate with the best mean accuracy over the seeds that
every rate has (the sweep's seeds) is kept, as Zoology keeps the best of its sweep; all the
kept rate's seeds then give the mean and a 95% percentile-bootstrap interval
(anatomy.search.leaderboard.bootstrap_ci). run.sh sweeps the rates at seed 0 and runs the
other seeds at the kept rate only; with every rate at every seed (FULL=1) the choice is by
the mean over all seeds. Either way the seeds that pick the rate also score it, so the kept
number is optimistic by the selection: read small gaps with care. Writes
STUDY/summary.json, STUDY/summary.md and, if matplotlib is installed,
STUDY/accuracy_vs_width.png: accuracy against width, one panel per sequence length, one line
per variant with its intervals, and the no-recall floor dashed.

    python scripts/study/analyse.py runs/study
    python scripts/study/analyse.py runs/study --best-lr 64 32   # "variant lr" per line
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path

from anatomy.search.leaderboard import bootstrap_ci


def read_search(db_path: Path) -> dict:
    """One search's settings and its finished trials (variant name, seed, status, metric,
    seconds), read from its database."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        settings = json.loads(db.execute("SELECT value FROM settings WHERE key='search'")
                              .fetchone()[0])
        trials = db.execute("SELECT v.name, t.seed, t.status, t.metric, t.seconds FROM trials t "
                            "JOIN variants v ON v.key = t.variant").fetchall()
    return {"settings": settings, "trials": trials}


def summarise(study: Path) -> dict:
    cells: dict[tuple, dict] = defaultdict(dict)  # (variant, T, d) -> lr -> {seed: metric}
    floors: dict[int, float] = {}
    by_cell: dict[tuple, list[float]] = defaultdict(list)  # (T, d) -> trial seconds
    planned = finished = 0
    for db_path in sorted(study.glob("*/search.db")):
        search = read_search(db_path)
        s = search["settings"]
        seq_len, width, lr = s["task"]["seq_len"], s["load_dims"]["d"], s["lr"]
        floor_file = db_path.parent / "leaderboard.json"
        if floor_file.exists():
            floors[seq_len] = json.loads(floor_file.read_text()).get("floor")
        for name, seed, status, metric, secs in search["trials"]:
            planned += 1
            if status in ("done", "diverged", "failed"):
                finished += 1
                if secs is not None:  # a trial that diverged early may have no time
                    by_cell[(seq_len, width)].append(secs)
            scores = cells[(name, seq_len, width)].setdefault(lr, {})
            if status == "done":
                scores[seed] = metric
            elif status in ("diverged", "failed"):
                scores[seed] = 0.0  # a diverged seed recalls nothing: counted, as accuracy 0
    seconds = [x for xs in by_cell.values() for x in xs]
    rows = []
    for (name, seq_len, width), by_lr in sorted(cells.items()):
        scored = {lr: xs for lr, xs in by_lr.items() if xs}
        if not scored:
            continue
        best, sweep = choose_lr(scored)
        xs = [scored[best][seed] for seed in sorted(scored[best])]
        low, high = bootstrap_ci(xs)
        rows.append({"variant": name, "seq_len": seq_len, "d": width, "lr": best,
                     "seeds": len(xs), "mean": sum(xs) / len(xs), "ci_low": low,
                     "ci_high": high, "per_seed": xs, "sweep_seeds": sweep,
                     "by_lr": {str(lr): _mean(v, sweep) for lr, v in sorted(scored.items())}})
    return {"rows": rows, "floors": floors, "trials": {"planned": planned,
                                                      "finished": finished},
            "seconds_per_trial": sum(seconds) / len(seconds) if seconds else None,
            "trial_seconds_total": sum(seconds),
            "seconds_by_cell": [{"seq_len": t, "d": w, "trials": len(xs),
                                 "mean": sum(xs) / len(xs), "min": min(xs), "max": max(xs)}
                                for (t, w), xs in sorted(by_cell.items())]}


def choose_lr(by_lr: dict[float, dict[int, float]]) -> tuple[float, list[int]]:
    """The rate with the best mean over the seeds every rate has finished (the sweep's),
    and those seeds; with no seed in common, the best mean over each rate's own seeds."""
    common = sorted(set.intersection(*(set(xs) for xs in by_lr.values())))
    return max(by_lr, key=lambda lr: _mean(by_lr[lr], common)), common


def _mean(scores: dict[int, float], seeds: list[int]) -> float:
    xs = [scores[s] for s in seeds] if seeds else list(scores.values())
    return sum(xs) / len(xs)


def best_lrs(study: Path, seq_len: int, width: int) -> dict[str, float]:
    """Each variant's kept rate in the cell (seq_len, width), from what has finished."""
    return {r["variant"]: r["lr"] for r in summarise(study)["rows"]
            if r["seq_len"] == seq_len and r["d"] == width}


def to_markdown(summary: dict) -> str:
    lines = [("| T | floor | d | variant | best lr | accuracy (mean) | 95% CI | seeds | "
             "per lr (mean over the sweep seeds) |"), "|---:|---:|---:|---|---:|---:|---|---|---|"]
    for r in summary["rows"]:
        floor = summary["floors"].get(r["seq_len"])
        per_lr = ", ".join(f"{lr}: {m:.3f}" for lr, m in r["by_lr"].items())
        floor_text = f"{floor:.4f}" if floor is not None else "–"
        seeds = ", ".join(f"{x:.3f}" for x in r["per_seed"])
        lines.append(f"| {r['seq_len']} | {floor_text} | {r['d']} | {r['variant']} | "
                     f"{r['lr']:g} | {r['mean']:.4f} | {r['ci_low']:.3f}–{r['ci_high']:.3f} | "
                     f"{seeds} | {per_lr} |")
    t = summary["trials"]
    per = summary["seconds_per_trial"]
    text = ("\n".join(lines) + f"\n\n{t['finished']} of {t['planned']} trials finished; "
            + (f"{per:.1f} s per trial on average\n" if per else "\n"))
    return text + "\n" + pivot_markdown(summary) + "\n" + seconds_markdown(summary)


def pivot_markdown(summary: dict) -> str:
    """One row per variant, one column per (T, d): the mean at the kept rate and its 95%
    interval; the floor of each T in the header."""
    cells = sorted({(r["seq_len"], r["d"]) for r in summary["rows"]})
    floors = summary["floors"]
    head = " | ".join(f"T={t}, d={d}" + (f" (floor {floors[t]:.3f})" if floors.get(t)
                                          is not None else "") for t, d in cells)
    lines = [f"| variant | {head} |", "|---|" + "---:|" * len(cells)]
    at = {(r["variant"], r["seq_len"], r["d"]): r for r in summary["rows"]}
    for name in sorted({r["variant"] for r in summary["rows"]}):
        parts = []
        for t, d in cells:
            r = at.get((name, t, d))
            parts.append("–" if r is None else
                         f"{r['mean']:.3f} ({r['ci_low']:.3f}–{r['ci_high']:.3f})")
        lines.append(f"| {name} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def seconds_markdown(summary: dict) -> str:
    """Wall seconds per trial (one worker, one torch thread) by cell."""
    lines = ["| T | d | trials | s per trial (mean) | min | max |",
             "|---:|---:|---:|---:|---:|---:|"]
    for c in summary["seconds_by_cell"]:
        lines.append(f"| {c['seq_len']} | {c['d']} | {c['trials']} | {c['mean']:.1f} | "
                     f"{c['min']:.1f} | {c['max']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> bool:
    """Accuracy against width, one panel per sequence length; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lengths = sorted({r["seq_len"] for r in summary["rows"]})
    variants = sorted({r["variant"] for r in summary["rows"]})
    fig, axes = plt.subplots(1, len(lengths), figsize=(4 * len(lengths), 3.4), dpi=110,
                             sharey=True, squeeze=False)
    for ax, seq_len in zip(axes[0], lengths):
        for i, name in enumerate(variants):
            rs = sorted((r for r in summary["rows"]
                         if r["seq_len"] == seq_len and r["variant"] == name),
                        key=lambda r: r["d"])
            if not rs:
                continue
            ds = [r["d"] for r in rs]
            means = [r["mean"] for r in rs]
            err = [[m - r["ci_low"] for m, r in zip(means, rs)],
                   [r["ci_high"] - m for m, r in zip(means, rs)]]
            ax.errorbar(ds, means, yerr=err, marker="o", capsize=3, label=name, color=f"C{i}")
        floor = summary["floors"].get(seq_len)
        if floor is not None:
            ax.axhline(floor, color="0.3", linestyle="--", linewidth=1, label="no-recall floor")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["d"] for r in summary["rows"]}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_title(f"sequence length {seq_len}", fontsize=10)
        ax.set_xlabel("model width d")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MQAR accuracy (best lr; 95% CI over seeds)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="the study's folder (run.sh's OUT)")
    parser.add_argument("--best-lr", nargs=2, type=int, metavar=("T", "D"),
                        help="print each variant's kept rate in this cell ('variant lr' lines)")
    args = parser.parse_args(argv)
    if not any(args.study.glob("*/search.db")):
        print(f"no search databases under {args.study}", file=sys.stderr)
        return 2
    if args.best_lr:
        for name, lr in sorted(best_lrs(args.study, *args.best_lr).items()):
            print(f"{name} {lr:g}")
        return 0
    summary = summarise(args.study)
    (args.study / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    markdown = to_markdown(summary)
    (args.study / "summary.md").write_text(markdown)
    print(markdown, end="")
    if plot(summary, args.study / "accuracy_vs_width.png"):
        print(f"figure: {args.study / 'accuracy_vs_width.png'}")
    else:
        print("matplotlib is not installed: no figure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
