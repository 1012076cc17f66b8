"""Plots of a search (matplotlib, written as PNG): the training-loss curve of each variant
(mean over its finished seeds), and each variant's final metric, one dot per seed, with the
mean and the spread across seeds, and the task's no-recall floor when it has one.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from .leaderboard import Row


def plot_curves(trials: list[dict], rows: list[Row], path: Path, title: str) -> None:
    """Training loss against tokens, one line per variant in leaderboard order."""
    plt = _pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    colours = plt.get_cmap("tab20").colors
    for i, r in enumerate(rows):
        curves = [t["curve"] for t in trials if t["variant"] == r.key and t["status"] == "done"
                  and t["curve"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        tokens = [c[0] for c in curves[0][:n]]
        mean = [sum(c[i][1] for c in curves) / len(curves) for i in range(n)]
        ax.plot(tokens, mean, label=r.name, linewidth=1.2, color=colours[i % len(colours)],
                linestyle="-" if i < len(colours) else "--")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("training loss (mean over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_metric(trials: list[dict], rows: list[Row], metric: str, path: Path,
                title: str, floor: float | None = None) -> None:
    """The final metric per variant: one dot per finished seed, a bar from min to max, and
    the mean as a vertical tick; the no-recall `floor` as a dashed line."""
    plt = _pyplot()
    if plt is None:
        return
    ranked = [r for r in rows if r.mean is not None]
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.28 * max(1, len(ranked))), dpi=100)
    for y, r in enumerate(reversed(ranked)):
        scores = [t["metric"] for t in trials if t["variant"] == r.key and t["status"] == "done"]
        ax.plot([r.min, r.max], [y, y], color="0.7", linewidth=3, solid_capstyle="butt")
        ax.scatter(scores, [y] * len(scores), s=12, color="C0", zorder=3)
        ax.plot([r.mean], [y], marker="|", markersize=12, color="C3", zorder=4)
    if floor is not None:
        ax.axvline(floor, color="0.3", linestyle="--", linewidth=1,
                   label=f"no-recall floor {floor:.3f}")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(range(len(ranked)))
    ax.set_yticklabels([r.name for r in reversed(ranked)], fontsize=7)
    ax.set_xlabel(f"{metric} (dots: seeds; red tick: mean; bar: range)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@functools.cache
def _pyplot():
    """matplotlib's pyplot, or None (said once) where the `plots` extra is not installed."""
    try:
        import matplotlib
    except ImportError:
        print("anatomy: plots skipped: matplotlib is not installed "
              "(pip install 'anatomy[plots]')", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
