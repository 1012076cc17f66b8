"""Benchmark softmax attention with position biases and per-token decays (issue 17): the
Forgetting Transformer (zoo/forgetting_transformer.anat), ALiBi (zoo/alibi.anat) and a
sliding window (zoo/sliding_window.anat, window W) compiled in the auto form, against, in
the same run and with the same weights:
- `sdpa`: the same module with the softmax forced onto scaled_dot_product_attention with a
  materialised float mask (softmax_bias's "sdpa" path), the baseline of the ratios;
- `explicit`: the parallel form, every box as written (the quadratic graph).
Whole modules (projections included), B = 1, d = 256, h = 4 (n = 64), float32, CPU.
Each measurement runs in a fresh process, so its peak memory (ru_maxrss above the process's
resident size before the call) is its own. Then decoding: time per token after a prefill of
P tokens, with the window and with a plain causal mask.

Run: python bench/softmax_bias.py [--lengths 1024 4096 16384] [--prefills 1024 16384]
     [--window 512] [--long 32768] [--long-mixers ...] [--timeout 600]
     [--json bench/results/softmax_bias.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MIXERS = ("forgetting_transformer", "alibi", "sliding_window")
# decoding: the sliding window, the same with a causal mask (no window), FoX, ALiBi
DECODERS = {"window": ("sliding_window", False), "causal": ("sliding_window", True),
            "fox": ("forgetting_transformer", False), "alibi": ("alibi", False)}
DIMS = {"d": 256, "h": 4}
ROOT = Path(__file__).resolve().parent.parent


def source(name: str, window: int, causal: bool = False) -> str:
    import anatomy
    text = (anatomy.zoo_dir() / f"{name}.anat").read_text()
    mask = "causal(t, s)" if causal else f"window(t, s, size={window})"
    return text.replace("window(t, s, size=4096)", mask)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(case: dict) -> dict:
    """One measurement, in this (fresh) process."""
    import torch
    from anatomy.lowering import softmax_bias

    import anatomy
    torch.manual_seed(0)
    name, variant, T = case["name"], case["variant"], case["T"]
    causal = case.get("causal", False)
    form = "parallel" if variant == "explicit" else "auto"
    module = anatomy.compile(source(name, case["window"], causal), name, form=form, **DIMS)
    if variant == "sdpa":
        softmax_bias.choose = lambda *a: "sdpa"
    x = torch.randn(1, T, DIMS["d"])
    if case["mode"] == "decode":
        state = module.init_state(1)
        with torch.no_grad():
            _, state = module.step(x, state)  # the prefill
            token = torch.randn(1, 1, DIMS["d"])
            module.step(token, state)
            base = rss_bytes()
            times = []
            for _ in range(case["tokens"]):
                start = time.perf_counter()
                _, state = module.step(token, state)
                times.append(time.perf_counter() - start)
        cache = state.get("cache:k")
        return {"ms_per_token": 1e3 * statistics.median(times),
                "cache_length": None if cache is None else cache.shape[1],
                "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
                / 2**20}

    def call():
        if case["mode"] == "fwd":
            with torch.no_grad():
                module(x)
        else:
            module.zero_grad(set_to_none=True)
            xg = x.clone().requires_grad_(True)
            module(xg).sum().backward()

    if case["repeat"] > 1:
        call()  # warm-up
    base = rss_bytes()
    times = []
    for _ in range(case["repeat"]):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"ms": 1e3 * statistics.median(times), "peak_mb": peak / 2**20}


def measure(case: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--case", json.dumps(case)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              check=False)
    except subprocess.TimeoutExpired:
        return {**case, "skipped": f"over {timeout:.0f} s"}
    if done.returncode != 0:
        return {**case, "failed": done.stderr.strip().splitlines()[-1:]}
    return {**case, **json.loads(done.stdout.strip().splitlines()[-1])}


def skip_reason(variant: str, T: int, mode: str) -> str | None:
    """Cases that would not fit this shared 24 GB machine: an [h, T, T] float32 matrix is
    4 GiB at T = 16k, and the explicit graph's backward keeps several."""
    if variant != "auto" and T > 8192:
        return f"needs several {4 * 4 * T * T / 2**30:.0f} GiB [h, T, T] matrices"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--mixers", nargs="*", default=list(MIXERS))
    ap.add_argument("--variants", nargs="+", default=["auto", "sdpa", "explicit"])
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"])
    ap.add_argument("--decoders", nargs="*", default=list(DECODERS))
    ap.add_argument("--lengths", type=int, nargs="*", default=[1024, 4096, 16384])
    ap.add_argument("--prefills", type=int, nargs="+", default=[1024, 16384])
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--long", type=int, nargs="*", default=[32768],
                    help="forward+backward of --long-mixers at these lengths (auto form only)")
    ap.add_argument("--long-mixers", nargs="*", default=list(MIXERS))
    ap.add_argument("--tokens", type=int, default=16, help="decode steps timed")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", default=str(ROOT / "bench/results/softmax_bias.json"))
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    rows = []
    load = [os.getloadavg()[0]]
    print(f"{'mixer':24} {'T':>6} {'mode':8} {'auto ms':>9} {'sdpa ms':>9} {'explicit':>9} "
          f"{'auto/sdpa':>9} {'auto MB':>8} {'sdpa MB':>8} {'expl MB':>8}")
    for name in args.mixers:
        for T in args.lengths:
            for mode in args.modes:
                got = {v: {} for v in ("auto", "sdpa", "explicit")}
                for variant in args.variants:
                    case = {"name": name, "variant": variant, "T": T, "mode": mode,
                            "window": args.window, "repeat": 3 if T <= 4096 else 1}
                    why = skip_reason(variant, T, mode)
                    got[variant] = {**case, "skipped": why} if why else \
                        measure(case, args.timeout)
                    rows.append(got[variant])
                ms = {v: r.get("ms") for v, r in got.items()}
                mb = {v: r.get("peak_mb") for v, r in got.items()}
                ratio = ms["auto"] / ms["sdpa"] if ms["auto"] and ms["sdpa"] else None
                print(f"{name:24} {T:6} {mode:8} " + " ".join(
                    f"{v:9.1f}" if v is not None else f"{'-':>9}" for v in ms.values())
                    + (f" {ratio:9.2f}" if ratio else f"{'-':>9}") + " " + " ".join(
                    f"{v:8.0f}" if v is not None else f"{'-':>8}" for v in mb.values()),
                    flush=True)
    for name in args.long_mixers:
        for T in args.long:
            case = {"name": name, "variant": "auto", "T": T, "mode": "fwd+bwd",
                    "window": args.window, "repeat": 1}
            r = measure(case, args.timeout)
            rows.append(r)
            print(f"{name:24} {T:6} fwd+bwd (auto): {r.get('ms', float('nan')):9.1f} ms, peak "
                  f"{r.get('peak_mb', float('nan')):6.0f} MB above the process before the call "
                  f"{r.get('skipped') or r.get('failed') or ''}", flush=True)
    print(f"\ndecode (auto form), ms per token after a prefill; window {args.window}")
    for label in args.decoders:
        name, causal = DECODERS[label]
        for P in args.prefills:
            case = {"name": name, "variant": "auto", "T": P, "mode": "decode",
                    "window": args.window, "causal": causal, "tokens": args.tokens}
            r = measure(case, args.timeout)
            rows.append(r)
            print(f"{label:32} prefill {P:6}: {r.get('ms_per_token', float('nan')):8.2f} ms/token"
                  f"  KV cache length {r.get('cache_length')}"
                  f"  {r.get('skipped') or r.get('failed') or ''}", flush=True)
    load.append(os.getloadavg()[0])
    print(f"\nload average (1 min) at start and end: {load[0]:.1f}, {load[1]:.1f} on "
          f"{os.cpu_count()} CPUs (shared with other jobs: expect noise)")
    Path(args.json).write_text(json.dumps({"dims": DIMS, "window": args.window,
                                           "load_average": load, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
