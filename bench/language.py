"""Benchmark: parse + type-check the whole zoo (issue: under 1 s). Prints a table, writes JSON.

Run: python bench/language.py [--json bench/results/language.json] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anatomy
from anatomy.program import load, zoo_dir


def time_zoo() -> tuple[float, int]:
    start = time.perf_counter()
    count = 0
    for path in sorted(zoo_dir().glob("*.anat")):
        count += len(list(load(path)))
    return time.perf_counter() - start, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default="bench/results/language.json")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()

    first, count = time_zoo()  # includes building the LALR parser once
    warm = [time_zoo()[0] for _ in range(args.repeat)]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "anatomy.cli", "check", str(zoo_dir())],
                   check=True, capture_output=True)
    cli = time.perf_counter() - start

    rows = [("first load in process (builds the parser)", first),
            (f"warm, median of {args.repeat}", statistics.median(warm)),
            ("`anatomy check zoo/` as a new process (imports included)", cli)]
    print(f"parse + check of the whole zoo: {count} anatomies in "
          f"{len(list(zoo_dir().glob('*.anat')))} files (anatomy {anatomy.__version__})")
    print(f"{'measurement':<58} {'seconds':>8}")
    for name, sec in rows:
        print(f"{name:<58} {sec:8.3f}")
    print(f"target: under 1 s -> {'met' if max(first, statistics.median(warm)) < 1 else 'MISSED'}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "anatomies": count, "first_s": first, "warm_median_s": statistics.median(warm),
        "cli_process_s": cli}, indent=2) + "\n")


if __name__ == "__main__":
    main()
