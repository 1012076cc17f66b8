"""Measurement: how often the prover gives neither a proof nor a counterexample.

Every pair of anatomies in zoo/*.anat (and zoo/search/*.anat) with the same signature (the
same number of inputs and outputs, the same ranks, and the same pattern of shared axis
names across the ports), plus the claims of tests/prover_claims.py, is given to
`anatomy.rewrite.prove`. Each outcome is one of

- `proof`;
- `counterexample`: refused, with inputs on which the sides differ by >= 1e-3 relative;
- `epsilon` / `small`: refused, the sides differ only by the size of an epsilon written in
  the diagrams, or by less than 1e-3 relative (no counterexample is presented);
- `agreed`: refused, but the sides agreed on every random input (a rule may be missing);
- `unmatched`: refused, the parameters of the two sides could not be matched;
- `error`: the claim is refused with an AnatError (e.g. a side cannot be compiled);
- `crash`: the prover raised another exception (a bug).

The neither-proof-nor-counterexample count is every refusal without a counterexample.
The smallest relative discrepancy among presented counterexamples is printed too.

Run: python bench/prover.py [--json bench/results/prover.json] [--only-tests]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import anatomy
from anatomy.errors import AnatError
from anatomy.rewrite import Proof, Side
from anatomy.verify import prove


def signature_key(d) -> tuple:
    """Ranks and the pattern of axis names shared across the ports (names renamed by first
    appearance), so (q[t, h, n], k[s, h, n]) and (a[t, g, m], b[u, g, m]) match."""
    first: dict[str, int] = {}
    pattern = []
    for port in d.inputs + d.outputs:
        pattern.append(tuple(first.setdefault(a, len(first)) for a in port.axes))
    return (len(d.inputs), len(d.outputs), tuple(pattern))


def zoo_pairs() -> list[tuple[Side, Side]]:
    groups: dict[tuple, list[Side]] = {}
    for path in sorted((ROOT / "zoo").rglob("*.anat")):
        program = anatomy.load(path, strict_dims=False)
        for name in program.own:
            d = program[name]
            if any(b.op == "slot" for b in d.boxes):
                continue  # a template with open slots is not a function
            groups.setdefault(signature_key(d), []).append(
                Side(d, str(path.relative_to(ROOT)), name))
    return [pair for sides in groups.values() for pair in combinations(sides, 2)]


def test_pairs() -> list[tuple[Side, Side, str, str]]:
    from tests.prover_claims import CLAIMS, load_claims
    program = load_claims()
    return [(Side(program[a]), Side(program[b]), "tests", want) for a, b, want in CLAIMS]


def outcome(result) -> tuple[str, float | None]:
    if isinstance(result, Proof):
        return "proof", None
    if result.counterexample is not None:
        return "counterexample", result.counterexample.rel_rmse
    from anatomy.verify.numeric import compile_pair
    try:  # the prover before issue 14 said "agreed, or parameters not matched" in one note
        matched = compile_pair(result.left.diagram, result.right.diagram)[2]
    except AnatError:
        return "error", None
    if not matched:
        return "unmatched", None
    for key, label in (("epsilon", "epsilon"), ("below the", "small")):
        if key in result.note:
            return label, None
    return "agreed", None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default="bench/results/prover.json")
    ap.add_argument("--only-tests", action="store_true", help="only the claims of the tests")
    args = ap.parse_args()
    claims = [] if args.only_tests else [(a, b, "zoo", "") for a, b in zoo_pairs()]
    claims += test_pairs()
    rows = []
    for a, b, group, expected in claims:
        start = time.perf_counter()
        try:
            kind, rel = outcome(prove(a, b))
        except AnatError as e:
            kind, rel = "error", None
            message = str(e).splitlines()[0]
        except Exception as e:  # noqa: BLE001 - a crash of the prover is an outcome here
            kind, rel = "crash", None
            message = f"{type(e).__name__}: {e}"
        else:
            message = ""
        seconds = time.perf_counter() - start
        rows.append({"left": a.label(), "right": b.label(), "group": group, "outcome": kind,
                     "expected": expected, "rel": rel, "seconds": seconds, "error": message})
        print(f"{a.label():<44} {b.label():<44} {group:<6} {kind:<14} {expected:<14} "
              f"{'' if rel is None else f'{rel:.3g}':>9} {seconds:6.2f}", flush=True)
    summary = {}
    for group in sorted({r["group"] for r in rows}):
        mine = [r for r in rows if r["group"] == group]
        counts = Counter(r["outcome"] for r in mine)
        neither = sum(n for k, n in counts.items() if k not in ("proof", "counterexample"))
        rels = [r["rel"] for r in mine if r["rel"] is not None]
        summary[group] = {"pairs": len(mine), "counts": dict(counts), "neither": neither,
                          "smallest_counterexample_rel": min(rels) if rels else None,
                          "seconds": sum(r["seconds"] for r in mine)}
        print(f"\n{group}: {len(mine)} claims, {dict(sorted(counts.items()))}; neither proof "
              f"nor counterexample: {neither}; smallest presented counterexample: "
              f"{summary[group]['smallest_counterexample_rel']}; "
              f"{summary[group]['seconds']:.1f} s")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "claims": rows}, indent=1)
                               + "\n")


if __name__ == "__main__":
    main()
