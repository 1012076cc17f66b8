"""A user's gated-linear-attention mixer, written as a per-channel decay in the diagram
(`decay(log_alpha[t, h, n], t, s)`), trained one step: time and peak memory per form.

The chunked form (what `auto` runs) is the rewrite engine's `chunk` rule, lowered to the
gated kernel `anatomy.kernels.gla`; the parallel form materialises the [B, T, T, H, N]
decay, so it is only run where that fits. Each measurement runs in a fresh process and
reports its peak resident memory above the process's baseline after building the module.

    python bench/gla_mixer.py                     # d = 256, T = 512 ... 8192
    python bench/gla_mixer.py --lengths 8192 --forms auto
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

MIXER = """anatomy gla_mixer(x[t, d]) -> y[t, d]
  dims d = 256, h = 4, n = 64, p = d / h
  q[t, h, n] = linear(x)
  k[t, h, n] = linear(x)
  v[t, h, p] = linear(x)
  log_alpha[t, h, n] = -softplus(-linear(x)) / 16
  o[t, h, p] = decay(log_alpha, t, s) * q * k[s, h, n] * v[s, h, p]
  y[t, d] = linear(o)
"""
RESULTS = Path(__file__).resolve().parent / "results" / "gla_mixer.json"
PARALLEL_LIMIT = 1024  # the parallel form's [T, T, H, N] decay past this would not fit


def one(form: str, length: int, d: int) -> dict:
    """Run in this process: build, then one forward+backward; peak RSS above the start."""
    import torch

    import anatomy
    torch.manual_seed(0)
    m = anatomy.compile(MIXER, form=form, d=d)
    x = torch.randn(1, length, d, requires_grad=True)
    m(x[:, :8]).sum().backward()  # warm-up (builds the kernel paths) on a short sequence
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    y = m(x)
    y.backward(torch.randn_like(y))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"form": form, "T": length, "d": d, "seconds": seconds,
            "peak_mib": max(peak - base, 0) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    ap.add_argument("--forms", nargs="+", default=["parallel", "auto"])
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.d)))
        return
    rows = []
    print(f"{'form':9s} {'T':>6s} {'fwd+bwd s':>10s} {'peak MiB':>9s}")
    for length in args.lengths:
        for form in args.forms:
            if form == "parallel" and length > PARALLEL_LIMIT:
                print(f"{form:9s} {length:6d} {'skipped: the materialised decay would not fit':>10s}")
                continue
            out = subprocess.run([sys.executable, __file__, "--one", form, str(length),
                                  "--d", str(args.d)], capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"{form:9s} {length:6d} failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{form:9s} {length:6d} {row['seconds']:10.3f} {row['peak_mib']:9.0f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"mixer": MIXER, "rows": rows}, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
