"""Benchmark: rendering the whole zoo (issue: under 10 s). Prints a table, writes JSON.

Per anatomy: building the picture (plates, labels, DOT: our Python), laying it out with
graphviz (`dot` through the graphviz package), and the baseline measured in the same run:
`dot -Tsvg` alone on the same DOT source; the ratio is our total over that baseline. Then
the whole gallery as a user runs it: `anatomy render zoo/ -o DIR` in a new process
(imports, loading and checking included). Times are medians of --repeat runs.

Run: python bench/render.py [--repeat 5] [--json bench/results/render.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import median_time

import anatomy
from anatomy.render.graph import build
from anatomy.render.layout import to_svg_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default="bench/results/render.json")
    args = ap.parse_args()

    rows = []
    for path in sorted(anatomy.zoo_dir().glob("*.anat")):
        for d in anatomy.load(path):
            graph = build(d)
            source = graph.source
            build_s = median_time(lambda d=d: build(d), args.repeat)
            layout_s = median_time(lambda g=graph: to_svg_text(g), args.repeat)
            dot_s = median_time(lambda s=source: subprocess.run(
                ["dot", "-Tsvg"], input=s, capture_output=True, text=True, check=True),
                args.repeat)
            rows.append({"entry": f"{path.name}:{d.name}", "boxes": len(d.boxes),
                         "build_s": build_s, "layout_s": layout_s, "dot_alone_s": dot_s})

    with tempfile.TemporaryDirectory() as out:
        gallery_s = median_time(lambda: subprocess.run(
            [sys.executable, "-m", "anatomy.cli", "render", str(anatomy.zoo_dir()), "-o", out],
            check=True, capture_output=True), args.repeat)

    print(f"rendering the zoo: {len(rows)} anatomies, medians of {args.repeat} runs (ms)")
    print(f"{'entry':<52} {'boxes':>5} {'build':>7} {'layout':>7} {'dot alone':>9} {'ratio':>6}")
    for r in rows:
        total = r["build_s"] + r["layout_s"]
        print(f"{r['entry']:<52} {r['boxes']:>5} {r['build_s'] * 1e3:7.1f} "
              f"{r['layout_s'] * 1e3:7.1f} {r['dot_alone_s'] * 1e3:9.1f} "
              f"{total / r['dot_alone_s']:6.2f}")
    build_total = sum(r["build_s"] for r in rows)
    layout_total = sum(r["layout_s"] for r in rows)
    dot_total = sum(r["dot_alone_s"] for r in rows)
    print(f"{'all (in process)':<52} {sum(r['boxes'] for r in rows):>5} "
          f"{build_total * 1e3:7.1f} {layout_total * 1e3:7.1f} {dot_total * 1e3:9.1f} "
          f"{(build_total + layout_total) / dot_total:6.2f}")
    print(f"`anatomy render zoo/ -o DIR` as a new process: {gallery_s:.2f} s "
          f"(target under 10 s -> {'met' if gallery_s < 10 else 'MISSED'})")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "repeat": args.repeat, "entries": rows, "build_total_s": build_total,
        "layout_total_s": layout_total, "dot_alone_total_s": dot_total,
        "gallery_process_s": gallery_s}, indent=2) + "\n")


if __name__ == "__main__":
    main()
