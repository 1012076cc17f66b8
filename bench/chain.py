"""Benchmark: a doubling chain of anatomies (a{i} calls a{i+1} twice; 2**depth calls when
inlined) at depths 10, 20 and 30: check, print, render, canonical form and compile, timed
in one process after its imports (issue 20: checking never finished at depth 30 before).

Canonical forms inline every call, and compiling gives every call its own parameters and
module, so past a few hundred calls (canonical forms) or 4,096 modules (compile,
`ANATOMY_MAX_MODULES`) both are refused up front (the time to refuse is what is measured);
render draws the top level (depth 1). Compile at depth 10 builds all 2,047 modules.
Prints a table, writes bench/results/chain.json.

Run: python bench/chain.py [--depths 10 20 30]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anatomy
from anatomy.errors import AnatError
from anatomy.program import load
from anatomy.render import to_dot
from anatomy.rewrite import canonical

STEPS = ("check", "print", "render", "canonical", "compile")


def doubling_chain(depth: int) -> str:
    parts = [f"anatomy a{i}(x[t, d]) -> y[t, d]\n  dims d = 4\n"
             f"  y[t, d] = a{i + 1}(x) + a{i + 1}(x)\n" for i in range(depth)]
    parts.append(f"anatomy a{depth}(x[t, d]) -> y[t, d]\n  dims d = 4\n"
                 "  param w[d] ~ ones\n  y[t, d] = x * w\n")
    return "\n".join(parts)


def run(step: str, text: str, state: dict) -> str:
    """One operation on the chain: "ok", or the start of the error that refused it."""
    try:
        if step == "check":
            state["d"] = load(text)["a0"]
        elif step == "print":
            state["d"].to_text()
        elif step == "render":
            to_dot(state["d"])
        elif step == "canonical":
            canonical(state["d"])
        else:
            anatomy.compile(state["d"])
        return "ok"
    except AnatError as e:
        return "refused: " + e.message[:48]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--depths", type=int, nargs="+", default=[10, 20, 30])
    ap.add_argument("--json", default="bench/results/chain.json")
    args = ap.parse_args()
    run("check", doubling_chain(1), {})  # builds the parser once
    rows = []
    print(f"{'depth':>5} {'step':<10} {'seconds':>8}  outcome")
    for depth in args.depths:
        text, state = doubling_chain(depth), {}
        for step in STEPS:
            start = time.perf_counter()
            outcome = run(step, text, state)
            seconds = time.perf_counter() - start
            rows.append({"depth": depth, "step": step, "seconds": seconds, "outcome": outcome})
            print(f"{depth:>5} {step:<10} {seconds:8.3f}  {outcome}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
