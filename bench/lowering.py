"""Benchmark the compiler's output: compiled modules vs hand-written PyTorch modules of the same
math, compile time per zoo entry, and decoding time per token against sequence length.

Prints tables and writes JSON. Run: python bench/lowering.py [--quick] [--json PATH]

The hand-written modules are what a strong engineer would write for the same diagrams with
the same weights: fused matmuls, scaled_dot_product_attention, and anatomy.kernels.ssd for
the semiseparable mixers (the kernel itself is benchmarked in bench/kernels.py), so the
ratio measures what the compiler adds or loses around the kernels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from anatomy.kernels import ssd as ssd_kernel
from timing import median_time
from torch import nn

import anatomy


def timeit(fn, repeat: int) -> float:
    """Median seconds of `repeat` calls after one warm-up call."""
    fn()
    return median_time(fn, repeat)


# -- hand-written modules (the same math as the zoo files, written directly) ------------------
class HandMHA(nn.Module):
    """zoo/mha.anat: causal softmax attention with H heads."""

    def __init__(self, sd: dict):
        super().__init__()
        d, self.h, self.n = sd["w_q"].shape
        self.w_qkv = nn.Parameter(torch.cat([sd[k].reshape(d, -1) for k in ("w_q", "w_k", "w_v")],
                                            1))
        self.w_y = nn.Parameter(sd["w_y"].reshape(-1, d).clone())

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (x @ self.w_qkv).view(b, t, 3, self.h, self.n).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return o.transpose(1, 2).reshape(b, t, -1) @ self.w_y


def hand_rope(x):
    """Rotary encoding (rotate-half), positions along dim 1, features last."""
    t, n = x.shape[1], x.shape[-1]
    pos = torch.arange(t, dtype=torch.float32)
    ang = pos[:, None] * 10000.0 ** (-2 * torch.arange(n // 2, dtype=torch.float32) / n)
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    x1, x2 = x[..., : n // 2], x[..., n // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


class HandRetNet(nn.Module):
    """zoo/retnet.anat: multi-scale retention with rotation, per-head RMS norm, swish gate."""

    def __init__(self, sd: dict):
        super().__init__()
        d, self.h, self.n = sd["w_q"].shape
        self.p = sd["w_v"].shape[2]
        self.w_in = nn.Parameter(torch.cat([sd[k].reshape(d, -1)
                                            for k in ("w_q", "w_k", "w_v", "w_g")], 1))
        self.w_y = nn.Parameter(sd["w_y"].reshape(-1, d).clone())
        self.register_buffer("log_gamma", torch.log(1 - 2.0 ** (-5 - torch.arange(self.h))))

    def forward(self, x):
        b, t, _ = x.shape
        h, n, p = self.h, self.n, self.p
        q, k, v, g = (x @ self.w_in).split([h * n, h * n, h * p, h * p], -1)
        q = hand_rope(q.view(b, t, h, n))
        k = hand_rope(k.view(b, t, h, n)) / n ** 0.5
        log_a = self.log_gamma.expand(b, t, h)
        r = ssd_kernel(q, k, v.view(b, t, h, p), log_a)
        r = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + 1e-5)
        return (F.silu(g.view(b, t, h, p)) * r).reshape(b, t, -1) @ self.w_y


class HandSSD(nn.Module):
    """zoo/ssd.anat: Mamba-2's SSD mixer (no convolution), gated RMS norm."""

    def __init__(self, sd: dict):
        super().__init__()
        d, self.h, self.p = sd["w_xs"].shape
        self.n = sd["w_b"].shape[1]
        self.w_in = nn.Parameter(torch.cat([sd["w_xs"].reshape(d, -1), sd["w_z"].reshape(d, -1),
                                            sd["w_b"], sd["w_c"], sd["w_dt"]], 1))
        for key in ("dt_bias", "a_log", "D"):
            self.register_parameter(key, nn.Parameter(sd[key].clone()))
        self.scale = nn.Parameter(sd["scale_o"].reshape(-1).clone())
        self.w_y = nn.Parameter(sd["w_y"].reshape(-1, d).clone())

    def forward(self, x):
        b, t, _ = x.shape
        h, p, n = self.h, self.p, self.n
        xs, z, bb, cc, dt = (x @ self.w_in).split([h * p, h * p, n, n, h], -1)
        xs = xs.view(b, t, h, p)
        dt = F.softplus(dt + self.dt_bias)
        log_a = dt * -self.a_log.exp()
        y = ssd_kernel(cc.unsqueeze(2), bb.unsqueeze(2), xs * dt[..., None], log_a)
        y = ((y + self.D[:, None] * xs) * F.silu(z.view(b, t, h, p))).reshape(b, t, -1)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5) * self.scale
        return y @ self.w_y


HAND = {"mha": HandMHA, "retnet": HandRetNet, "ssd": HandSSD}


def compare(lengths, repeat: int, only=None) -> list[dict]:
    rows = []
    torch.manual_seed(0)
    for name, hand_cls in HAND.items():
        if only and name not in only:
            continue
        compiled = anatomy.compile(f"zoo/{name}.anat", d=512)
        hand = hand_cls({k: v.detach() for k, v in compiled.state_dict().items()})
        for t in lengths:
            x = torch.randn(1, t, 512)
            with torch.no_grad():
                err = ((compiled(x) - hand(x)).norm() / hand(x).norm()).item()
            for mode in ("fwd", "fwd+bwd"):
                def run(m, mode=mode, x=x):
                    if mode == "fwd":
                        with torch.no_grad():
                            m(x)
                    else:
                        m(x).sum().backward()
                # interleave the two so machine noise hits both alike
                tc, th = [], []
                for _ in range(repeat):
                    tc.append(timeit(lambda m=compiled: run(m), 1))
                    th.append(timeit(lambda m=hand: run(m), 1))
                c, h = statistics.median(tc), statistics.median(th)
                rows.append({"anatomy": name, "T": t, "mode": mode, "compiled_ms": c * 1e3,
                             "hand_ms": h * 1e3, "ratio": c / h, "rel_diff": err})
                print(f"{name:<7} {t:>6} {mode:<8} {c * 1e3:>10.1f} {h * 1e3:>10.1f} "
                      f"{c / h:>6.3f}   {err:.1e}", flush=True)
    return rows


def compile_times(repeat: int) -> list[dict]:
    rows = []
    for path in sorted(anatomy.zoo_dir().glob("*.anat")):
        program = anatomy.load(path)
        for d in program:
            ms = timeit(lambda d=d: anatomy.compile(d), repeat) * 1e3
            rows.append({"anatomy": f"{path.name}:{d.name}", "compile_ms": ms})
            print(f"{path.name + ':' + d.name:<48} {ms:>8.1f}", flush=True)
    return rows


def decode_times(lengths, steps: int) -> list[dict]:
    rows = []
    for name in ("ssd", "retnet"):
        module = anatomy.compile(f"zoo/{name}.anat", d=512)
        for t in lengths:
            x = torch.randn(1, t + steps, 512)
            with torch.no_grad():
                _, state = module.step(x[:, :t], module.init_state(1))  # chunked prefill
                times = []
                for i in range(steps):
                    start = time.perf_counter()
                    _, state = module.step(x[:, t + i:t + i + 1], state)
                    times.append(time.perf_counter() - start)
            ms = statistics.median(times[2:]) * 1e3
            rows.append({"anatomy": name, "T": t, "step_ms": ms})
            print(f"{name:<7} {t:>6} {ms:>10.3f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--json", default="bench/results/lowering.json")
    ap.add_argument("--only", nargs="*", help="anatomies to compare (default: all)")
    ap.add_argument("--lengths", nargs="*", type=int, help="sequence lengths to compare")
    ap.add_argument("--compare-only", action="store_true",
                    help="skip the compile-time and decoding tables")
    args = ap.parse_args()
    lengths = args.lengths or ([256, 1024] if args.quick else [1024, 4096, 16384])
    repeat = 2 if args.quick else 3

    print("compiled vs hand-written modules (B=1, d=512, fp32; ms, median; ratio = "
          "compiled / hand-written)")
    print(f"{'anatomy':<7} {'T':>6} {'mode':<8} {'compiled':>10} {'hand':>10} {'ratio':>6}   "
          "rel.diff")
    vs_hand = compare(lengths, repeat, args.only)
    compiled, decode = [], []
    if not args.compare_only:
        print("\ncompile time per zoo entry (ms, anatomy.compile at default dims, form auto)")
        compiled = compile_times(3)
        print("\ndecoding: time per token after a chunked prefill of T tokens (ms)")
        decode = decode_times([1024, 16384] if not args.quick else [256, 1024], 22)
    worst = max(r["ratio"] for r in vs_hand)
    print(f"\n# worst compiled/hand-written ratio: {worst:.3f} (target <= 1.05)")
    if compiled:
        slowest = max(compiled, key=lambda r: r["compile_ms"])
        print(f"# slowest compile: {slowest['anatomy']} {slowest['compile_ms']:.1f} ms "
              "(target < 50 ms)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(
        {"torch": torch.__version__, "threads": torch.get_num_threads(), "vs_hand": vs_hand,
             "compile": compiled, "decode": decode}, indent=2) + "\n")


if __name__ == "__main__":
    main()
