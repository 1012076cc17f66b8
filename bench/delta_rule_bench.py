"""Benchmark the delta-rule kernel (the ``delta_rule`` section of bench/kernels.py).

DeltaNet, Gated DeltaNet and KDA at B=1, H=8, N=P=64, fp32, chunk 64, T = 1k..16k: forward and
forward+backward time and peak memory of ``anatomy.kernels.delta_rule`` in its two chunked
forms (the C++ CPU kernel, what ``backend="auto"`` runs on CPU tensors, and the PyTorch chunked
path) beside flash-linear-attention's chunkwise references in the
same run (``delta_rule_chunkwise``, ``naive_chunk_gated_delta_rule``, ``naive_chunk_kda`` from
fla-core; pip install fla-core einops), each eager and under ``torch.compile``. Inputs as the
models use them: k L2-normalised, beta = sigmoid(randn), log_a = -0.1 U(0, 1) (per head, or per
key channel for KDA), scale N**-0.5 (fla's delta_rule_chunkwise fixes it). fla's references get
their own layout ([B, H, T, D] for delta_rule_chunkwise) prepared outside the timings. Every
forward output is compared with the C++ kernel's (relative RMSE).

A peer whose previous length took more than ``PEER_BUDGET_S`` per call is skipped at longer
lengths (said so in the table); compiled peers are compiled (one call, not timed) before the
round-robin timing, and their compile time is reported.

Usage: python bench/delta_rule_bench.py [--quick] [--lengths T ...] [--compile-lengths T ...]
       [--models deltanet gated_deltanet kda] [--modes fwd fwd+bwd] [--reps R] [--json PATH]
       (or: python bench/kernels.py --section delta_rule ...)
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
from anatomy.kernels import delta_rule

from kernels import (
    agreement,
    backward_call,
    forward_call,
    interleaved_times,
    malloc_setting,
    peak_memory,
    spread,
)

B, H, N, P, CHUNK = 1, 8, 64, 64, 64
SCALE = N**-0.5
OURS = "anatomy delta_rule (C++ cpu)"
OURS_TORCH = "anatomy delta_rule (torch chunked)"
MINE = (OURS, OURS_TORCH)
PEER_BUDGET_S = 30.0  # per call: longer lengths of a peer this slow are skipped
GATES = {"deltanet": "none", "gated_deltanet": "scalar", "kda": "channel"}


def make_inputs(T: int, gate: str) -> list[torch.Tensor]:
    """q, k (L2-normalised), v, beta [, log_a] in our [B, T, H, D] layout, leaves with grad."""
    gen = torch.Generator().manual_seed(T)
    q = torch.randn(B, T, H, N, generator=gen)
    k = F.normalize(torch.randn(B, T, H, N, generator=gen), dim=-1)
    v = torch.randn(B, T, H, P, generator=gen)
    beta = torch.sigmoid(torch.randn(B, T, H, generator=gen))
    tensors = [q, k, v, beta]
    if gate != "none":
        shape = (B, T, H) if gate == "scalar" else (B, T, H, N)
        tensors.append(-0.1 * torch.rand(shape, generator=gen))
    return [x.requires_grad_() for x in tensors]


def ours(q, k, v, beta, log_a=None):
    return delta_rule(q, k, v, beta, log_a=log_a, scale=SCALE, chunk_size=CHUNK, backend="cpu")


def ours_torch(q, k, v, beta, log_a=None):
    return delta_rule(q, k, v, beta, log_a=log_a, scale=SCALE, chunk_size=CHUNK,
                      backend="torch")


def fla_peers(gate: str) -> dict[str, tuple[Callable, bool]]:
    """name -> (fn, heads_first): fn takes its inputs in [B, H, T, D] when heads_first, else in
    our layout, and returns o in the same layout. Empty when fla-core is missing."""
    try:
        from fla.ops.delta_rule.naive import delta_rule_chunkwise
        from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule
        from fla.ops.kda.naive import naive_chunk_kda
    except ImportError:
        print("# fla-core not installed: timing ours only (pip install fla-core einops)")
        return {}
    if gate == "none":
        def fn(q, k, v, beta):
            return delta_rule_chunkwise(q, k, v, beta, chunk_size=CHUNK)[0]

        return {"fla delta_rule_chunkwise": (fn, True)}
    if gate == "scalar":
        def fn(q, k, v, beta, log_a):
            return naive_chunk_gated_delta_rule(q, k, v, log_a, beta, chunk_size=CHUNK,
                                                scale=SCALE)[0]

        return {"fla naive_chunk_gated_delta_rule": (fn, False)}

    def fn(q, k, v, beta, log_a):
        return naive_chunk_kda(q, k, v, log_a, beta, scale=SCALE, chunk_size=CHUNK)[0]

    return {"fla naive_chunk_kda": (fn, False)}


def peer_inputs(leaves: list[torch.Tensor], heads_first: bool) -> list[torch.Tensor]:
    """The peer's own leaves: ours, or copies in [B, H, T, D] made outside the timings."""
    if not heads_first:
        return leaves
    return [x.detach().transpose(1, 2).contiguous().requires_grad_() for x in leaves]


def in_our_layout(fn: Callable, heads_first: bool) -> Callable:
    """fn's output in our [B, T, H, P] layout (for the agreement check)."""
    return (lambda *xs: fn(*xs).transpose(1, 2)) if heads_first else fn


def on_own_inputs(fn: Callable, prepared: list[torch.Tensor]) -> Callable:
    """fn called on the peer's own leaves whatever it is passed (for :func:`agreement`)."""
    return lambda *_: fn(*prepared)


def run(lengths: list[int], compile_lengths: list[int], reps: int, json_path: Path,
        models: tuple[str, ...] = tuple(GATES), modes: tuple[str, ...] = ("fwd", "fwd+bwd")
        ) -> dict:
    warnings.filterwarnings("ignore", message=".*Triton is not supported.*")
    print(f"# delta_rule: device=cpu threads={torch.get_num_threads()} malloc: "
          f"{malloc_setting()}")
    records, too_slow = [], set()
    for model in models:
        gate = GATES[model]
        for T in lengths:
            leaves = make_inputs(T, gate)
            peers = fla_peers(gate)
            for mode in modes:
                make_call = forward_call if mode == "fwd" else backward_call
                calls = {OURS: make_call(ours, leaves), OURS_TORCH: make_call(ours_torch, leaves)}
                outputs, compile_s = {OURS_TORCH: (ours_torch, leaves)}, {}
                for name, (fn, heads_first) in peers.items():
                    prepared = peer_inputs(leaves, heads_first)
                    variants = [(name, fn)]
                    if T in compile_lengths:
                        variants.append((f"{name} (torch.compile)", torch.compile(fn)))
                    for label, variant in variants:
                        if (label, mode) in too_slow:
                            records.append({"model": model, "implementation": label, "T": T,
                                            "mode": mode, "skipped": "skipped (previous "
                                            f"length > {PEER_BUDGET_S:.0f} s per call)"})
                            continue
                        call = make_call(variant, prepared)
                        if "compile" in label:  # compile before timing
                            start = time.perf_counter()
                            call()
                            compile_s[label] = time.perf_counter() - start
                        calls[label] = call
                        outputs[label] = (in_our_layout(variant, heads_first), prepared)
                times = interleaved_times(calls, reps, "cpu")
                for name, call in calls.items():
                    row = {"model": model, "implementation": name, "T": T, "mode": mode}
                    if name in compile_s:
                        row["first_call_s"] = compile_s[name]
                    if isinstance(times[name], str):
                        records.append({**row, "skipped": times[name]})
                        continue
                    stats = spread(times[name])
                    if stats["time_ms"] > 1e3 * PEER_BUDGET_S:
                        too_slow.add((name, mode))
                    row.update(stats, peak_mib=peak_memory(call, "cpu"))
                    if mode == "fwd" and name != OURS:
                        row["rel_rmse_vs_ours"] = agreement(on_own_inputs(*outputs[name]),
                                                            ours, leaves)
                    records.append(row)
                    print(f"# {model} {name} T={T} {mode}: {stats['time_ms']:.1f} ms "
                          f"[{stats['time_ms_q1']:.1f}, {stats['time_ms_q3']:.1f}]", flush=True)
                for x in leaves:
                    x.grad = None
            write_json(records, lengths, reps, json_path)  # partial results survive a stop
    print_table(records)
    result = write_json(records, lengths, reps, json_path)
    for line in result["targets"]["lines"]:
        print(line)
    print(f"# wrote {json_path}")
    return result


def write_json(records: list[dict], lengths: list[int], reps: int, json_path: Path) -> dict:
    result = {
        "section": "delta_rule",
        "device": "cpu",
        "platform": platform.platform(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "malloc": malloc_setting(),
        "repetitions": reps,
        "shape": {"B": B, "H": H, "N": N, "P": P, "chunk": CHUNK, "dtype": "float32"},
        "records": records,
        "targets": targets(records, T=8192 if 8192 in lengths else lengths[-1]),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2))
    return result


def print_table(records: list[dict]) -> None:
    print(f"# B={B} H={H} N={N} P={P} fp32 chunk {CHUNK}; ms = median, [q1, q3] its quartiles; "
          "MiB = peak extra memory (RSS); first call = compile + run for torch.compile")
    print(f"{'model':<16}{'implementation':<52}{'T':>6}  {'mode':<8}{'ms':>10}  "
          f"{'[q1, q3]':<22}{'MiB':>6}  {'rel RMSE':>9}  first call")
    for r in records:
        lead = f"{r['model']:<16}{r['implementation']:<52}{r['T']:>6}  {r['mode']:<8}"
        if "skipped" in r:
            print(f"{lead}  {r['skipped']}")
            continue
        quartiles = f"[{r['time_ms_q1']:.1f}, {r['time_ms_q3']:.1f}]"
        agree = f"{r['rel_rmse_vs_ours']:.1e}" if "rel_rmse_vs_ours" in r else ""
        first = f"{r['first_call_s']:.1f} s" if "first_call_s" in r else ""
        print(f"{lead}{r['time_ms']:>10.1f}  {quartiles:<22}{r['peak_mib']:>6.0f}  {agree:>9}  "
              f"{first}")


def targets(records: list[dict], T: int) -> dict:
    """The issue's target at length T: ours (the C++ kernel; the PyTorch chunked path too, for
    the record) >= 2x the fastest of fla's references (eager or compiled), forward and
    forward+backward, per model."""
    out, lines = {"T": T}, []
    for model in GATES:
        for mode in ("fwd", "fwd+bwd"):
            at = [r for r in records if r["model"] == model and r["T"] == T and r["mode"] == mode
                  and "time_ms" in r]
            peers = [r for r in at if r["implementation"] not in MINE]
            if not peers:
                continue
            best = min(peers, key=lambda r: r["time_ms"])
            for impl in MINE:
                mine = next((r for r in at if r["implementation"] == impl), None)
                if mine is None:
                    continue
                speedup = best["time_ms"] / mine["time_ms"]
                key = f"{model} {mode}" if impl == OURS else f"{model} {mode} (torch chunked)"
                out[key] = {"ours": impl, "ours_ms": mine["time_ms"],
                            "fastest_peer": best["implementation"], "peer_ms": best["time_ms"],
                            "speedup": speedup}
                lines.append(f"# T={T} {model} {mode}: {impl} {mine['time_ms']:.1f} ms, "
                             f"{speedup:.2f}x vs fastest peer ({best['implementation']}, "
                             f"{best['time_ms']:.1f} ms)")
    out["lines"] = lines
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--lengths", type=int, nargs="+", help="sequence lengths T")
    parser.add_argument("--compile-lengths", type=int, nargs="*",
                        help="lengths at which the torch.compile peers run (default: all)")
    parser.add_argument("--reps", type=int, help="timed rounds per implementation (default 7)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" /
                        "delta_rule.json", help="where to write the JSON results")
    parser.add_argument("--models", nargs="+", choices=tuple(GATES), default=tuple(GATES))
    parser.add_argument("--modes", nargs="+", choices=("fwd", "fwd+bwd"),
                        default=("fwd", "fwd+bwd"))
    args = parser.parse_args(argv)
    lengths = args.lengths or ([256, 512] if args.quick else [1024, 2048, 4096, 8192, 16384])
    compile_lengths = lengths if args.compile_lengths is None else args.compile_lengths
    reps = args.reps or (3 if args.quick else 7)
    run(lengths, compile_lengths, reps, args.json, tuple(args.models), tuple(args.modes))


if __name__ == "__main__":
    main()
