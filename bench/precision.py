"""Half precision against float32: every zoo anatomy compiled once, run in float32 and as
copies cast to bfloat16 and float16 (`module.to(dtype)`), on the same random inputs.

Error: relative RMSE ||y_half - y_32|| / ||y_32|| of the outputs, and max |y_half - y_32| /
max |y_32|. Prints a table and writes bench/results/precision.json.

The normalised linear attentions with the identity feature map divide by sum_s q.k, which
cancels on random inputs (ill-conditioned: errors near 1 whatever the arithmetic); they get
a second row, `(positive)`, on inputs and parameters in absolute value, where it does not
(tests/test_precision.py).

Run: python bench/precision.py [--seq 256] [--dims d=64] [--only retnet --seq 4096]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

import anatomy
from anatomy.program import load, zoo_dir

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_precision import ILL_CONDITIONED, positive

HALF = (torch.bfloat16, torch.float16)


def inputs_for(module, seq: int, batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    """Random float32 inputs laid out [batch, time, ...]; inputs named log* are log-decays
    (negative), as `anatomy compile --run` makes them."""
    gen = torch.Generator().manual_seed(seed)
    d = module.diagram
    out = []
    for p in d.inputs:
        shape = [batch] + [module.shapes.size(a) or (seq if a == d.time_axis else 4)
                           for a in p.axes]
        x = torch.randn(shape, generator=gen)
        out.append(-torch.nn.functional.softplus(x) if p.name.startswith("log") else x)
    return out


def errors(module, seq: int, dtype: torch.dtype, well_conditioned: bool = False
           ) -> tuple[float, float]:
    """(relative RMSE, max error / max |y|) of `module` cast to `dtype` against float32;
    `well_conditioned`: inputs and parameters in absolute value."""
    xs = inputs_for(module, seq)
    if well_conditioned:
        module, xs = positive(module, xs)
    half = copy.deepcopy(module).to(dtype)
    with torch.no_grad():
        ref = module(*xs)
        got = half(*(x.to(dtype) for x in xs))
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = got if isinstance(got, tuple) else (got,)
    num = sum(float((g.double() - r.double()).pow(2).sum()) for g, r in zip(got, ref))
    den = sum(float(r.double().pow(2).sum()) for r in ref)
    peak = max(float((g.double() - r.double()).abs().max()) for g, r in zip(got, ref))
    top = max(float(r.double().abs().max()) for r in ref)
    return (num / den) ** 0.5, peak / top


def zoo_entries(only: set[str] | None = None):
    """(file stem, anatomy) for every anatomy of the zoo without slots."""
    for path in sorted(zoo_dir().glob("*.anat")):
        for d in load(path):
            if only and d.name not in only:
                continue
            if any(b.op == "slot" for b in d.boxes):
                continue
            yield path, d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--only", nargs="*", help="anatomy names (default: the whole zoo)")
    ap.add_argument("--json", default="bench/results/precision.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    print(f"half precision vs float32 at T={args.seq} (batch 2, torch {torch.__version__}, CPU)")
    print(f"{'anatomy':<52} {'bf16 rmse':>10} {'bf16 max':>10} {'fp16 rmse':>10} "
          f"{'fp16 max':>10}")
    for path, d in zoo_entries(set(args.only) if args.only else None):
        module = anatomy.compile(d)
        for well in (False, True) if d.name in ILL_CONDITIONED else (False,):
            start = time.perf_counter()
            row = {"anatomy": f"{path.name}:{d.name}" + (" (positive)" if well else ""),
                   "seq": args.seq}
            for dtype in HALF:
                rmse, peak = errors(module, args.seq, dtype, well)
                row[str(dtype).split(".")[1]] = {"rmse": rmse, "max": peak}
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            print(f"{row['anatomy']:<52} {row['bfloat16']['rmse']:10.2e} "
                  f"{row['bfloat16']['max']:10.2e} {row['float16']['rmse']:10.2e} "
                  f"{row['float16']['max']:10.2e}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
