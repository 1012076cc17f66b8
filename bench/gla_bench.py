"""Benchmark the GLA kernel (the ``gla`` section of bench/kernels.py).

Gated linear attention (per-channel decay) at B=1, H=8, N=P=64, fp32, chunk 64, T = 1k..16k:
forward and forward+backward time, peak memory and GFLOP/s as a fraction of this machine's fp32
matmul rate (measured in the same run, before and after the sweep, the larger used) of
``anatomy.kernels.gla`` -- the C++ CPU kernel (what ``backend="auto"`` runs on CPU tensors) and
the PyTorch chunked path -- beside two peers: flash-linear-attention's ``naive_recurrent_gla``
(fla-core, pip install --no-deps fla-core einops; skipped with a note when absent) and a
chunked PyTorch GLA written from the paper's algorithm (bench/gla_reference.py), each eager and
under ``torch.compile``. Inputs: log_alpha = logsigmoid(randn) / 16 (the paper's gate), scale
N**-0.5 (fla's naive_recurrent_gla fixes it). Every forward output is compared with the C++
kernel's (relative RMSE).

fla's reference is a Python loop over T steps: compiling it unrolls the loop (minutes per
length), so its torch.compile variant runs only at ``--compile-fla-lengths`` (default none,
said so in the table). A peer whose previous length took more than ``PEER_BUDGET_S`` per call
is skipped at longer lengths.

Usage: python bench/gla_bench.py [--quick] [--lengths T ...] [--compile-lengths T ...]
       [--compile-fla-lengths T ...] [--modes fwd fwd+bwd] [--reps R] [--json PATH]
       (or: python bench/kernels.py --section gla ...)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from anatomy.kernels import gla
from anatomy.kernels.gla import cpu_kernel_available
from gla_reference import gla_chunk_paper

from kernels import (
    agreement,
    backward_call,
    forward_call,
    interleaved_times,
    malloc_setting,
    matmul_rate,
    peak_memory,
    spread,
    ssd_flops,
)

B, H, N, P, CHUNK = 1, 8, 64, 64, 64
SCALE = N**-0.5
CPU_KERNEL = "anatomy gla (C++ CPU)"
TORCH_PATH = "anatomy gla (torch chunked)"
PAPER = "GLA paper's chunked algorithm (bench/gla_reference.py)"
FLA = "fla naive_recurrent_gla"
PEER_BUDGET_S = 20.0  # per call: longer lengths of a peer this slow are skipped


def make_inputs(T: int) -> list[torch.Tensor]:
    """q, k, v, log_alpha [B, T, H, D] leaves with grad; log_alpha = logsigmoid(randn) / 16."""
    gen = torch.Generator().manual_seed(T)
    q = torch.randn(B, T, H, N, generator=gen)
    k = torch.randn(B, T, H, N, generator=gen)
    v = torch.randn(B, T, H, P, generator=gen)
    log_alpha = F.logsigmoid(torch.randn(B, T, H, N, generator=gen)) / 16
    return [x.requires_grad_() for x in (q, k, v, log_alpha)]


def implementations() -> dict[str, tuple[Callable, bool]]:
    """name -> (fn(q, k, v, log_alpha) -> y, whether a torch.compile variant is timed too)."""
    impls: dict[str, tuple[Callable, bool]] = {
        TORCH_PATH: (lambda q, k, v, a: gla(q, k, v, a, scale=SCALE, backend="torch"), False),
        PAPER: (lambda q, k, v, a: gla_chunk_paper(q, k, v, a, scale=SCALE, chunk=CHUNK), True),
    }
    if cpu_kernel_available():
        impls = {CPU_KERNEL: (lambda q, k, v, a: gla(q, k, v, a, scale=SCALE, backend="cpu"),
                              False), **impls}
    else:
        print("# the C++ CPU kernel is unavailable: timing the PyTorch chunked path only")
    try:
        from fla.ops.gla.naive import naive_recurrent_gla

        impls[FLA] = (lambda q, k, v, a: naive_recurrent_gla(q, k, v, a)[0], True)
    except ImportError:
        print("# fla-core not installed: skipping fla's naive_recurrent_gla "
              "(pip install --no-deps fla-core einops)")
    return impls


def run(lengths, compile_lengths, compile_fla_lengths, reps, json_path,
        modes=("fwd", "fwd+bwd")) -> dict:
    warnings.filterwarnings("ignore", message=".*Triton is not supported.*")
    rate = matmul_rate("cpu")
    print(f"# gla: device=cpu threads={torch.get_num_threads()} fp32 matmul {rate:.1f} GFLOP/s "
          f"malloc: {malloc_setting()}")
    impls = implementations()
    ours = CPU_KERNEL if CPU_KERNEL in impls else TORCH_PATH
    records, too_slow = [], set()
    for T in lengths:
        leaves = make_inputs(T)
        for mode in modes:
            make_call = forward_call if mode == "fwd" else backward_call
            calls, fns, compile_s = {}, {}, {}
            for name, (fn, compilable) in impls.items():
                variants = [(name, fn)]
                wanted = compile_fla_lengths if name == FLA else compile_lengths
                if compilable and T in wanted:
                    variants.append((f"{name} (torch.compile)", torch.compile(fn)))
                elif compilable:
                    records.append({"implementation": f"{name} (torch.compile)", "T": T,
                                    "mode": mode, "skipped": "not run at this length "
                                    "(compiling unrolls its T-step loop)" if name == FLA
                                    else "not run at this length"})
                for label, variant in variants:
                    if (label, mode) in too_slow:
                        records.append({"implementation": label, "T": T, "mode": mode,
                                        "skipped": f"skipped (previous length > "
                                        f"{PEER_BUDGET_S:.0f} s per call)"})
                        continue
                    call = make_call(variant, leaves)
                    if "compile" in label:  # compile before timing
                        start = time.perf_counter()
                        call()
                        compile_s[label] = time.perf_counter() - start
                    calls[label], fns[label] = call, variant
            times = interleaved_times(calls, reps, "cpu")
            for name, call in calls.items():
                row = {"implementation": name, "T": T, "mode": mode}
                if name in compile_s:
                    row["first_call_s"] = compile_s[name]
                if isinstance(times[name], str):
                    records.append({**row, "skipped": times[name]})
                    continue
                stats = spread(times[name])
                if stats["time_ms"] > 1e3 * PEER_BUDGET_S:
                    too_slow.add((name, mode))
                gflops = ssd_flops(T) * (1 if mode == "fwd" else 3) / stats["time_ms"] / 1e6
                row.update(stats, peak_mib=peak_memory(call, "cpu"), gflops=gflops)
                if mode == "fwd" and name != ours:
                    row["rel_rmse_vs_ours"] = agreement(fns[name], fns[ours], leaves)
                records.append(row)
                print(f"# {name} T={T} {mode}: {stats['time_ms']:.1f} ms "
                      f"[{stats['time_ms_q1']:.1f}, {stats['time_ms_q3']:.1f}]", flush=True)
            for x in leaves:
                x.grad = None
    rate_after = matmul_rate("cpu")
    print(f"# fp32 matmul rate after the sweep: {rate_after:.1f} GFLOP/s")
    rate = max(rate, rate_after)
    for row in records:
        if "gflops" in row:
            row["fraction_of_matmul"] = row["gflops"] / rate
    print_table(records, rate)
    summary = targets(records, ours, T=8192 if 8192 in lengths else lengths[-1])
    for line in summary["lines"]:
        print(line)
    result = {
        "section": "gla",
        "device": "cpu",
        "platform": platform.platform(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "malloc": malloc_setting(),
        "matmul_gflops": rate,
        "repetitions": reps,
        "shape": {"B": B, "H": H, "N": N, "P": P, "chunk": CHUNK, "dtype": "float32",
                  "log_alpha": "logsigmoid(randn) / 16"},
        "records": records,
        "targets": summary,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2))
    print(f"# wrote {json_path}")
    return result


def print_table(records: list[dict], rate: float) -> None:
    print(f"# B={B} H={H} N={N} P={P} fp32 chunk {CHUNK}; ms = median, [q1, q3] its quartiles; "
          f"MiB = peak extra memory (RSS); %mm = GFLOP/s / {rate:.0f} GFLOP/s fp32 matmul; "
          "first call = compile + run for torch.compile")
    print(f"{'implementation':<72}{'T':>6}  {'mode':<8}{'ms':>10}  {'[q1, q3]':<22}{'MiB':>6}"
          f"{'%mm':>6}  {'rel RMSE':>9}  first call")
    for r in records:
        lead = f"{r['implementation']:<72}{r['T']:>6}  {r['mode']:<8}"
        if "skipped" in r:
            print(f"{lead}  {r['skipped']}")
            continue
        quartiles = f"[{r['time_ms_q1']:.1f}, {r['time_ms_q3']:.1f}]"
        agree = f"{r['rel_rmse_vs_ours']:.1e}" if "rel_rmse_vs_ours" in r else ""
        first = f"{r['first_call_s']:.1f} s" if "first_call_s" in r else ""
        print(f"{lead}{r['time_ms']:>10.1f}  {quartiles:<22}{r['peak_mib']:>6.0f}"
              f"{100 * r['fraction_of_matmul']:>5.0f}%  {agree:>9}  {first}")


def targets(records: list[dict], ours: str, T: int) -> dict:
    """The issue's targets at length T: ours >= 2x the fastest peer (eager or compiled) and
    >= 30% of the matmul rate, forward and forward+backward."""
    out, lines = {"T": T}, []
    for mode in ("fwd", "fwd+bwd"):
        at = [r for r in records if r["T"] == T and r["mode"] == mode and "time_ms" in r]
        mine = next((r for r in at if r["implementation"] == ours), None)
        peers = [r for r in at if not r["implementation"].startswith("anatomy")]
        if mine is None:
            continue
        entry = {"implementation": ours, "ms": mine["time_ms"],
                 "fraction_of_matmul": mine["fraction_of_matmul"]}
        text = (f"# T={T} {mode}: {ours} {mine['time_ms']:.1f} ms, "
                f"{100 * mine['fraction_of_matmul']:.0f}% of matmul rate")
        if peers:
            best = min(peers, key=lambda r: r["time_ms"])
            entry.update(fastest_peer=best["implementation"], peer_ms=best["time_ms"],
                         speedup=best["time_ms"] / mine["time_ms"])
            text += (f", {entry['speedup']:.2f}x vs fastest peer ({best['implementation']}, "
                     f"{best['time_ms']:.1f} ms)")
        out[mode] = entry
        lines.append(text)
    out["lines"] = lines
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--lengths", type=int, nargs="+", help="sequence lengths T")
    parser.add_argument("--compile-lengths", type=int, nargs="*",
                        help="lengths at which the paper reference's torch.compile variant runs "
                        "(default: all)")
    parser.add_argument("--compile-fla-lengths", type=int, nargs="*", default=[],
                        help="lengths at which fla's compiled loop runs (default: none)")
    parser.add_argument("--modes", nargs="+", choices=("fwd", "fwd+bwd"),
                        default=("fwd", "fwd+bwd"))
    parser.add_argument("--reps", type=int, help="timed rounds per implementation (default 7)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" /
                        "gla.json", help="where to write the JSON results")
    args = parser.parse_args(argv)
    lengths = args.lengths or ([256, 512] if args.quick else [1024, 2048, 4096, 8192, 16384])
    compile_lengths = lengths if args.compile_lengths is None else args.compile_lengths
    reps = args.reps or (3 if args.quick else 7)
    run(lengths, compile_lengths, args.compile_fla_lengths, reps, args.json, tuple(args.modes))


if __name__ == "__main__":
    main()
