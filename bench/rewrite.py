"""Benchmark: the rewrite engine (issue: each required proof in under 5 s, each refusal in
under 10 s). Prints a table, writes JSON.

Per claim: the proof search in-process (normalising both sides and comparing), and the
baseline measured in the same run: checking the claim numerically instead (compiling both
sides and comparing them on random inputs, which proves nothing but is what one would do
without the engine); then `anatomy prove` end to end as a new process (imports, loading,
printing). Then every rule's certificate (sympy and numeric). Times are medians of
--repeat runs.

Run: python bench/rewrite.py [--repeat 5] [--json bench/results/rewrite.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from timing import median_time

import anatomy
from anatomy.rewrite import RULES, Proof, Side
from anatomy.verify import prove
from anatomy.verify.certify import certify
from anatomy.verify.numeric import distance

ZOO = Path(anatomy.zoo_dir())
CLAIMS = [  # (left, right, dims, expected)
    ("forms.anat:ssm_core", "cores.anat:ssd_core", {}, "proof"),
    ("cores.anat:retention_core", "forms.anat:retention_recurrent_core", {}, "proof"),
    ("cores.anat:retention_core", "forms.anat:retention_chunkwise_core", {}, "proof"),
    ("forms.anat:retention_recurrent_core", "forms.anat:retention_chunkwise_core", {},
     "proof"),
    ("cores.anat:hydra_construction_core", "cores.anat:quasiseparable_core", {}, "proof"),
    ("mqa.anat:mqa", "gqa.anat:gqa", {"g": 1}, "proof"),
    ("mha.anat:mha", "gqa.anat:gqa", {"g": 8}, "proof"),
    ("cores.anat:softmax_core", "cores.anat:linear_core", {}, "refusal"),
    ("cores.anat:linear_core", "forms.anat:linear_bidirectional_core", {}, "refusal"),
    ("forms.anat:softmax_bidirectional_core", "forms.anat:softmax_reassociated_core", {},
     "refusal"),
]


def side(target: str, dims: dict) -> Side:
    file, name = target.split(":")
    d = anatomy.load(ZOO / file, strict_dims=False, **dims)[name]
    return Side(d, str(ZOO / file), name, {k: v for k, v in dims.items() if k in d.dims})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default="bench/results/rewrite.json")
    args = ap.parse_args()

    claims = []
    print(f"{'claim':<72} {'result':<8} {'steps':>5} {'search s':>9} {'numeric s':>9} "
          f"{'ratio':>6} {'CLI s':>6}")
    for left, right, dims, expected in CLAIMS:
        a, b = side(left, dims), side(right, dims)
        result = prove(a, b)
        got = "proof" if isinstance(result, Proof) else "refusal"
        steps = len(result.chain()) if isinstance(result, Proof) else 0
        search = median_time(lambda a=a, b=b: prove(a, b), args.repeat)
        numeric = median_time(lambda a=a, b=b: distance(a.diagram, b.diagram, 64),
                              args.repeat)
        cmd = [sys.executable, "-m", "anatomy.cli", "prove", f"{ZOO}/{left}", f"{ZOO}/{right}",
               "--brief"] + (["--dims", ",".join(f"{k}={v}" for k, v in dims.items())]
                             if dims else [])
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        cli = time.perf_counter() - start
        claim = f"{left} = {right}" + (f" ({dims})" if dims else "")
        ok = got == expected
        print(f"{claim:<72} {got:<8} {steps:>5} {search:>9.3f} {numeric:>9.3f} "
              f"{search / numeric:>6.2f} {cli:>6.2f}{'' if ok else '  UNEXPECTED'}",
              flush=True)
        claims.append({"claim": claim, "expected": expected, "result": got, "steps": steps,
                       "search_s": search, "numeric_check_s": numeric,
                       "ratio_vs_numeric": search / numeric, "cli_s": cli})

    print(f"\n{'rule':<20} {'kind':<11} {'sites':>5} {'certified':>9} {'seconds':>8}")
    rules = []
    for rule in RULES.values():
        cert = certify(rule)
        print(f"{rule.name:<20} {rule.kind:<11} {cert.sites:>5} {cert.ok!s:>9} "
              f"{cert.seconds:>8.2f}", flush=True)
        rules.append({"rule": rule.name, "kind": rule.kind, "sites": cert.sites,
                      "certified": cert.ok, "seconds": cert.seconds,
                      "worst_numeric_rel_rmse": cert.worst_numeric})
    certified = sum(r["certified"] for r in rules)
    print(f"\n{certified}/{len(rules)} rules certified "
          f"({sum(r['kind'] == 'exact' for r in rules)} exact, "
          f"{sum(r['kind'] == 'approximate' for r in rules)} approximate)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"claims": claims, "rules": rules}, indent=2) + "\n")


if __name__ == "__main__":
    main()
