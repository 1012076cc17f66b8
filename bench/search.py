"""Benchmark: enumerating the default search space (issue: >= 1,000 fillings per second,
dedupe included) and a CI-sized search (4 variants, 1 seed, a tiny budget: under 2 minutes).

Enumeration is timed three ways in the same run: the baseline (`canonical(instantiate(f))`
for each filling, one process), the search layer's staged enumeration in one process, and
with one worker process per core. The staged keys are checked against the baseline's for
every filling. The machine is shared: the load average is printed with the numbers.

Run: python bench/search.py [--json bench/results/search.json] [--repeat 3] [--no-search]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anatomy
from anatomy.rewrite import canonical
from anatomy.search import SearchSpace

TEMPLATE = anatomy.zoo_dir() / "search" / "attention.anat"
CI_VARIANTS = ["mha identity scaled_dot causal_mask softmax_normaliser",
               "mha identity scaled_dot causal_mask no_normaliser",
               "mha identity scaled_dot selective_decay no_normaliser",
               "mqa identity scaled_dot causal_mask sigmoid_normaliser"]


def time_enumeration(space: SearchSpace, workers: int, repeat: int) -> list[float]:
    rates = []
    for _ in range(repeat):
        e = space.enumerate(workers=workers)
        rates.append(e.rate)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default="bench/results/search.json")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-search", action="store_true", help="skip the CI-sized search")
    args = ap.parse_args()
    load_before = os.getloadavg()

    space = SearchSpace.load(TEMPLATE)
    reference = space.enumerate(workers=1)  # also warms up imports and the parser
    start = time.perf_counter()
    direct = [canonical(space.instantiate(f.choice)) for f in reference.fillings]
    direct_s = time.perf_counter() - start
    mismatches = sum(k != f.key for k, f in zip(direct, reference.fillings))
    baseline_rate = len(direct) / direct_s
    one = time_enumeration(space, 1, args.repeat)
    cores = os.cpu_count() or 1
    many = time_enumeration(space, cores, args.repeat)

    rows = [("baseline: canonical(instantiate(f)) per filling, 1 process", [baseline_rate]),
            ("staged enumeration, 1 process", one),
            (f"staged enumeration, {cores} worker processes", many)]
    e = reference
    print(f"default space {TEMPLATE.name}: {len(e.fillings)} fillings, "
          f"{len(e.fillings) - len(e.rejected)} type-correct, {len(e.classes)} classes "
          f"({sum(len(c.members) for c in e.classes.values() if len(c.members) > 1)} fillings "
          f"collapsed into {sum(1 for c in e.classes.values() if len(c.members) > 1)} classes)")
    print(f"keys equal to the baseline's: {len(direct) - mismatches}/{len(direct)}")
    print(f"{'enumeration (dedupe included)':<62} {'best/s':>8} {'median/s':>9} {'x base':>7}")
    for name, rates in rows:
        print(f"{name:<62} {max(rates):8.0f} {statistics.median(rates):9.0f} "
              f"{statistics.median(rates) / baseline_rate:7.2f}")
    best = max(many + one)
    print(f"target >= 1,000 fillings/s: {'met' if best >= 1000 else 'MISSED'} "
          f"(best {best:.0f}/s); load average before {load_before[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f} on {cores} cores")

    search = None
    if not args.no_search:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "anatomy.cli", "search", str(TEMPLATE), "--task", "mqar",
                   "--dims", "d=32,h=4", "--seq-len", "32", "--vocab", "32", "--pairs", "4",
                   "--budget", "50k", "--seeds", "1", "--out", str(Path(tmp) / "ci"),
                   "--no-progress"]
            for v in CI_VARIANTS:
                cmd += ["--variant", v]
            start = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            search = time.perf_counter() - start
        print(f"CI-sized search (4 variants, 1 seed, 50k tokens, MQAR, a new process, "
              f"{cores} workers): {search:.1f} s; target under 120 s: "
              f"{'met' if search < 120 else 'MISSED'}")
        print(out.stdout)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "fillings": len(e.fillings), "type_correct": len(e.fillings) - len(e.rejected),
        "classes": len(e.classes), "keys_equal_to_baseline": len(direct) - mismatches,
        "baseline_rate": baseline_rate, "staged_1_process_rates": one,
        f"staged_{cores}_processes_rates": many, "cores": cores,
        "load_average_before": load_before[0], "load_average_after": os.getloadavg()[0],
        "ci_search_seconds": search}, indent=2) + "\n")


if __name__ == "__main__":
    main()
