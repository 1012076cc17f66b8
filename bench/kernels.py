"""Benchmark SSD kernels: our chunked kernels vs the naive quadratic reference and PyTorch peers.

Forward and forward+backward time and peak memory at B=1, H=8, N=P=64, fp32, per-head keys
(G=H), T = 1k..16k; achieved GFLOP/s as a fraction of this machine's fp32 matmul rate measured
in the same run. Ours: the PyTorch chunked path and, on CPUs, the C++ chunked kernel (what
``ssd(backend="auto")`` runs there; built before timing). Peers (optional, never runtime
dependencies of the package):
flash-linear-attention's ``naive_chunk_simple_gla`` (pip install fla-core einops) and Mamba-2's
``ssd_minimal_discrete`` (imported from mamba_ssm when present, else re-implemented from the
paper listing and labelled so). On CUDA the Triton path is timed as well, against fla's Triton
``chunk_simple_gla``. Implementations are timed round-robin (median and quartiles reported).

Usage: python bench/kernels.py [--quick] [--lengths T ...] [--reps R] [--json PATH]
The delta-rule section (DeltaNet, Gated DeltaNet, KDA vs fla): python bench/kernels.py
--section delta_rule [its options, see bench/delta_rule_bench.py]. The GLA section (per-channel
decay vs fla's naive_recurrent_gla and the paper's chunked algorithm): --section gla [its
options, see bench/gla_bench.py].
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from anatomy.kernels import ssd
from anatomy.kernels.ssd import cpu_kernel_available

B, H, N, P, CHUNK = 1, 8, 64, 64, 64
NAIVE_MEMORY_BOUND = 1 << 30  # bytes of one [B, H, T, T] fp32 matrix above which naive is skipped
PAPER_LISTING = "mamba2 ssd_minimal_discrete (re-implemented from the paper listing)"
OURS = "anatomy chunked (torch)"  # the reference every output is compared with
CPU_KERNEL = "anatomy chunked (C++ CPU)"
TRITON = "anatomy chunked (triton)"


def ssd_flops(T: int) -> float:
    """Forward FLOPs of the chunked algorithm (Q = 64): per token and head 2Q(N+P) + 4NP.

    The same nominal count is used for every implementation; fwd+bwd counts 3x forward.
    """
    return B * H * T * (2 * CHUNK * (N + P) + 4 * N * P)


def matmul_rate(device: str) -> float:
    """Measured fp32 GFLOP/s of one large torch.matmul on this machine."""
    size = 4096 if device == "cuda" else 2048
    a = torch.randn(size, size, device=device)
    seconds = median_time(lambda: a @ a, reps=5, device=device)
    return 2 * size**3 / seconds / 1e9


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], reps: int, device: str) -> float:
    """Median wall time of ``reps`` calls after one warm-up."""
    fn()
    synchronize(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_free_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the baseline may include cached free memory
        pass


def peak_memory(fn: Callable[[], object], device: str) -> float:
    """Peak extra memory of one call, in MiB.

    CUDA: torch.cuda.max_memory_allocated above the memory in use before the call. CPU: resident
    set size sampled every 0.5 ms by a thread, peak minus the RSS before the call, after
    glibc's malloc_trim has returned freed heap memory to the OS (so the baseline is live memory
    only). Short spikes between samples can be missed: a lower bound of the true peak.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    _release_free_heap()
    base = _rss_bytes()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak - base, 0) / 2**20


def ssd_minimal_listing(X, A, B_, C, block_len):
    """Mamba-2 SSD "minimal" chunked algorithm, re-implemented from the paper's Listing 1.

    X: [b, l, h, p]; A: [b, l, h] (log decay); B_, C: [b, l, h, n] (per-head). l % block_len == 0.
    """

    def segsum(x):
        T = x.size(-1)
        x = x[..., None].expand(*x.shape, T)
        ones = torch.ones(T, T, dtype=torch.bool, device=x.device)
        x = x.masked_fill(~torch.tril(ones, -1), 0)
        x = torch.cumsum(x, dim=-2)
        return x.masked_fill(~torch.tril(ones, 0), -torch.inf)

    b, length, h, p = X.shape
    c = length // block_len
    X, B_, C = (t.reshape(b, c, block_len, h, t.shape[-1]) for t in (X, B_, C))
    A = A.reshape(b, c, block_len, h).permute(0, 3, 1, 2)  # b h c l
    A_cumsum = torch.cumsum(A, dim=-1)
    L = torch.exp(segsum(A))
    Y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B_, L, X)
    decay_states = torch.exp(A_cumsum[:, :, :, -1:] - A_cumsum)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B_, decay_states, X)
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
    decay_chunk = torch.exp(segsum(torch.nn.functional.pad(A_cumsum[:, :, :, -1], (1, 0))))
    new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states = new_states[:, :-1]
    state_decay_out = torch.exp(A_cumsum)
    Y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states, state_decay_out)
    return (Y_diag + Y_off).reshape(b, length, h, p)


def implementations(device: str) -> dict[str, Callable]:
    """name -> fn(q, k, v, log_a) -> y, for every implementation available here."""
    impls: dict[str, Callable] = {
        "anatomy chunked (torch)": lambda q, k, v, a: ssd(q, k, v, a, backend="torch"),
        "anatomy naive (quadratic)": lambda q, k, v, a: ssd(q, k, v, a, backend="naive"),
    }
    if device == "cpu" and cpu_kernel_available():
        impls[CPU_KERNEL] = lambda q, k, v, a: ssd(q, k, v, a, backend="cpu")
    if device == "cuda":
        impls[TRITON] = lambda q, k, v, a: ssd(q, k, v, a, backend="triton")
    try:
        from fla.ops.simple_gla.naive import naive_chunk_simple_gla

        impls["fla naive_chunk_simple_gla"] = lambda q, k, v, a: naive_chunk_simple_gla(
            q, k, v, a, scale=1.0, chunk_size=CHUNK
        )[0]
        if device == "cuda":  # on GPUs users would take fla's Triton kernel
            from fla.ops.simple_gla import chunk_simple_gla

            impls["fla chunk_simple_gla (triton)"] = lambda q, k, v, a: chunk_simple_gla(
                q, k, v, a, scale=1.0
            )[0]
    except ImportError:
        print("# fla-core not installed: skipping the flash-linear-attention peer")
    try:
        from mamba_ssm.modules.ssd_minimal import ssd_minimal_discrete

        impls["mamba2 ssd_minimal_discrete"] = lambda q, k, v, a: ssd_minimal_discrete(
            v, a, k, q, CHUNK
        )[0]
    except ImportError:
        impls[PAPER_LISTING] = lambda q, k, v, a: ssd_minimal_listing(v, a, k, q, CHUNK)
    return impls


def interleaved_times(
    calls: dict[str, Callable[[], object]], reps: int, device: str
) -> dict[str, list[float] | str]:
    """Seconds per call of each implementation, timed round-robin after one warm-up each.

    Interleaving spreads any background load on a shared machine over all implementations
    alike. A call whose warm-up took more than 2 s is timed once. An implementation whose
    warm-up raises is reported as the error text (and not timed), so one failing peer does not
    stop the run.
    """
    slow, times = {}, {}
    for name, call in calls.items():
        start = time.perf_counter()
        try:
            call()
            synchronize(device)
        except Exception as error:  # noqa: BLE001 -- a peer that cannot run here is reported
            times[name] = f"failed: {type(error).__name__}: {error}"[:200]
            continue
        slow[name] = time.perf_counter() - start > 2.0
        times[name] = []
    for round_index in range(reps):
        for name, call in calls.items():
            if name not in slow or (slow[name] and round_index > 0):
                continue
            start = time.perf_counter()
            call()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def agreement(fn: Callable, reference: Callable, inputs: list[torch.Tensor]) -> float:
    """Relative RMSE ||fn - reference|| / ||reference|| of the two outputs on the same inputs."""
    with torch.no_grad():
        got, want = fn(*inputs).double(), reference(*inputs).double()
    return float((got - want).norm() / want.norm())


def forward_call(fn: Callable, inputs: list[torch.Tensor]) -> Callable[[], object]:
    def call() -> object:
        with torch.no_grad():
            return fn(*inputs)

    return call


def backward_call(fn: Callable, inputs: list[torch.Tensor]) -> Callable[[], object]:
    """One training step's work: forward, then backward of a fixed dense random cotangent dL/dy
    into fresh gradients.

    Dense: ``.sum().backward()`` would pass an expanded tensor of ones instead. Fresh: the
    gradients are set to None first, as ``optimizer.zero_grad()`` does before each step;
    otherwise every call after the first would also add its gradients into the previous ones
    (three passes over [B, T, H, 64] tensors, ~4 ms at T = 8192 on our CPU, the same for every
    implementation).
    """
    v = inputs[2]
    cotangent = torch.randn(v.shape, generator=torch.Generator().manual_seed(1)).to(v.device)

    def call() -> None:
        for x in inputs:
            x.grad = None
        fn(*inputs).backward(cotangent)

    return call


def spread(seconds: list[float]) -> dict:
    """Median, quartiles, min and max of repeated timings, in ms."""
    ms = sorted(1e3 * t for t in seconds)
    quartiles = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return {"time_ms": statistics.median(ms), "time_ms_q1": quartiles[0],
            "time_ms_q3": quartiles[2], "time_ms_min": ms[0], "time_ms_max": ms[-1],
            "repetitions": len(ms)}


def malloc_setting() -> str:
    """How this process's malloc treats freed memory, as far as the environment says.

    On CPUs it moves the forward+backward times: glibc by default unmaps large freed blocks
    (always at 32 MB and up, i.e. T >= 16384 here), so each call faults its fresh outputs in
    again (docs/kernels.md, "Page faults").
    """
    names = sorted(n for n in os.environ if n.startswith("MALLOC_") or n == "LD_PRELOAD")
    if not names:
        return "glibc defaults"
    return " ".join(f"{n}={os.environ[n]}" for n in names)


def run(lengths: list[int], reps: int, json_path: Path) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not cpu_kernel_available():  # builds it now, outside the timings
        print("# the C++ CPU kernel is unavailable: timing the PyTorch chunked path only")
    rate = matmul_rate(device)
    print(f"# device={device} threads={torch.get_num_threads()} fp32 matmul {rate:.1f} GFLOP/s "
          "(measured again after the sweep; the fractions use the larger of the two)")
    if device == "cpu":
        print(f"# malloc: {malloc_setting()}")
    records = []
    for T in lengths:
        gen = torch.Generator().manual_seed(T)
        q, k = (torch.randn(B, T, H, N, generator=gen) / N**0.5 for _ in range(2))
        v = torch.randn(B, T, H, P, generator=gen)
        log_a = (-0.1 * torch.rand(B, T, H, generator=gen)).to(device)
        q, k, v = (x.to(device) for x in (q, k, v))
        leaves = [x.requires_grad_() for x in (q, k, v, log_a)]
        for mode in ("fwd", "fwd+bwd"):
            make_call = forward_call if mode == "fwd" else backward_call
            calls, fns = {}, implementations(device)
            for name, fn in fns.items():
                if "naive (quadratic)" in name and 4 * B * H * T * T > NAIVE_MEMORY_BOUND:
                    records.append({"implementation": name, "T": T, "mode": mode,
                                    "skipped": "skipped (O(T^2) memory)"})
                else:
                    calls[name] = make_call(fn, leaves)
            times = interleaved_times(calls, reps, device)
            for name, call in calls.items():
                row = {"implementation": name, "T": T, "mode": mode}
                if isinstance(times[name], str):
                    records.append({**row, "skipped": times[name]})
                    continue
                stats = spread(times[name])
                gflops = ssd_flops(T) * (1 if mode == "fwd" else 3) / stats["time_ms"] / 1e6
                records.append({**row, **stats, "peak_mib": peak_memory(call, device),
                                "gflops": gflops, "fraction_of_matmul": gflops / rate})
                if mode == "fwd":  # same work: every output against ours
                    records[-1]["rel_rmse_vs_ours"] = agreement(fns[name], fns[OURS], leaves)
                print(f"# {name} T={T} {mode}: {stats['time_ms']:.1f} ms "
                      f"[{stats['time_ms_q1']:.1f}, {stats['time_ms_q3']:.1f}]", flush=True)
            for x in leaves:
                x.grad = None
    rate_after = matmul_rate(device)
    if rate_after > rate:
        for row in records:
            if "gflops" in row:
                row["fraction_of_matmul"] = row["gflops"] / rate_after
    print(f"# fp32 matmul rate after the sweep: {rate_after:.1f} GFLOP/s")
    rate = max(rate, rate_after)
    print_table(records, rate)
    worst = max((r for r in records if "rel_rmse_vs_ours" in r),
                key=lambda r: r["rel_rmse_vs_ours"], default=None)
    if worst is not None:
        print(f"# outputs agree: largest relative RMSE against ours {worst['rel_rmse_vs_ours']:.1e} "
              f"({worst['implementation']}, T={worst['T']})")
    summary = targets(records, T=8192 if 8192 in lengths else lengths[-1])
    for line in summary["lines"]:
        print(line)
    result = {
        "device": device,
        "platform": platform.platform(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "malloc": malloc_setting(),
        "matmul_gflops": rate,
        "repetitions": reps,
        "shape": {"B": B, "H": H, "G": H, "N": N, "P": P, "dtype": "float32"},
        "records": records,
        "targets": summary,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2))
    print(f"# wrote {json_path}")
    return result


def print_table(records: list[dict], rate: float) -> None:
    print(f"# B={B} H={H} G={H} N={N} P={P} fp32; ms = median, [q1, q3] its quartiles over the "
          f"repetitions; MiB = peak extra memory; %mm = achieved GFLOP/s / {rate:.0f} GFLOP/s "
          "fp32 matmul")
    print(f"{'implementation':<70}{'T':>6}  {'mode':<8}{'ms':>10}  {'[q1, q3]':<20}{'MiB':>6}"
          f"{'GFLOP/s':>9}{'%mm':>6}")
    for r in records:
        lead = f"{r['implementation']:<70}{r['T']:>6}  {r['mode']:<8}"
        if "skipped" in r:
            print(f"{lead}  {r['skipped']}")
        else:
            quartiles = f"[{r['time_ms_q1']:.1f}, {r['time_ms_q3']:.1f}]"
            print(f"{lead}{r['time_ms']:>10.1f}  {quartiles:<20}{r['peak_mib']:>6.0f}"
                  f"{r['gflops']:>9.1f}{100 * r['fraction_of_matmul']:>5.0f}%")


def targets(records: list[dict], T: int) -> dict:
    """The issue's targets at length T: >= 2x the fastest peer and >= 40% of matmul rate.

    Ours is what ``ssd(backend="auto")`` runs: the Triton path where it ran (CUDA), else the
    C++ CPU kernel, else the PyTorch chunked path.
    """
    lines, out = [], {"T": T}
    for mode in ("fwd", "fwd+bwd"):
        at = [r for r in records if r["T"] == T and r["mode"] == mode and "time_ms" in r]
        ours = next((r for name in (TRITON, CPU_KERNEL, OURS)
                     for r in at if r["implementation"] == name), None)
        peers = [r for r in at if not r["implementation"].startswith("anatomy")]
        if ours is None:
            continue
        entry = {"implementation": ours["implementation"],
                 "fraction_of_matmul": ours["fraction_of_matmul"]}
        text = (f"# T={T} {mode}: {ours['implementation']} "
                f"{100 * ours['fraction_of_matmul']:.0f}% of matmul rate")
        if peers:
            best = min(peers, key=lambda r: r["time_ms"])
            entry.update(fastest_peer=best["implementation"],
                         speedup_vs_fastest_peer=best["time_ms"] / ours["time_ms"])
            text += (f", {entry['speedup_vs_fastest_peer']:.2f}x vs fastest peer "
                     f"({best['implementation']})")
        out[mode] = entry
        lines.append(text)
    out["lines"] = lines
    return out


def main() -> None:
    section = argparse.ArgumentParser(add_help=False)
    section.add_argument("--section", choices=("ssd", "delta_rule", "gla"), default="ssd")
    chosen, rest = section.parse_known_args()
    if chosen.section == "gla":  # its own options: see bench/gla_bench.py
        import gla_bench

        gla_bench.main(rest)
        return
    if chosen.section == "delta_rule":  # its own options: see bench/delta_rule_bench.py
        import delta_rule_bench

        delta_rule_bench.main(rest)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--lengths", type=int, nargs="+", help="sequence lengths T to run")
    parser.add_argument("--reps", type=int, help="timed rounds per implementation (default 11)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" /
                        "kernels.json", help="where to write the JSON results")
    args = parser.parse_args(rest)
    lengths = args.lengths or ([256, 512] if args.quick else [1024, 2048, 4096, 8192, 16384])
    reps = args.reps or (3 if args.quick else 11)
    run(lengths, reps, args.json)


if __name__ == "__main__":
    main()
