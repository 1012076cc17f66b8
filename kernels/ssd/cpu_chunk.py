"""Chunked SSD for CPUs: the C++ kernel of ``cpu_chunk.cpp`` behind a torch.autograd.Function.

Each (batch, head) sequence is one task (tasks run in parallel on torch's threads); a task walks
its chunks in order with its state in cache, every per-chunk product a BLAS gemm on the caller's
strided tensors, so there is no gathering into block layout and no bulk scan (what costs
``chunk.py`` half its time on a CPU). Same algebra and numerics as ``chunk.py``: decays are
exponentials of in-chunk cumsums, factorised per chunk when the chunk's spread allows, exact
masked exponentials otherwise; float32 throughout (half-precision inputs are upcast).

The extension is compiled on first use (about 20 s, then cached under ``~/.cache/anatomy``; set
``ANATOMY_BUILD_DIR`` to move it). When it cannot be built (no C++ compiler, a torch without
an exported BLAS) or ``ANATOMY_CPU_KERNEL=0`` is set, :func:`cpu_kernel_available` is False
and ``ssd(backend="auto")`` uses ``chunk.py`` instead.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..cpu_build import CFLAGS, load_extension
from .validate import check_ssd_inputs

SOURCE = Path(__file__).with_name("cpu_chunk.cpp")


@functools.cache
def _extension():
    """The compiled module, or None (with a warning saying why) when it cannot be built."""
    return load_extension("ssd", "SSD", SOURCE, CFLAGS)


def cpu_kernel_available() -> bool:
    """True when the C++ kernel is built (or builds now) and loads."""
    return _extension() is not None


def cpu_kernel_takes(*tensors: torch.Tensor | None) -> bool:
    """True when the kernel can compute these inputs: CPU tensors, none of them float64 (the
    kernel computes in float32; None entries are absent optional inputs)."""
    present = [t for t in tensors if t is not None]
    return all(t.device.type == "cpu" and t.dtype != torch.float64 for t in present)


def _float32(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float32).contiguous()


class _SSDCpu(torch.autograd.Function):
    """Forward saves the state entering every chunk ([B, H, n + 1, N, P] float32); the backward
    walks the chunks in reverse from them and returns dq, dk already summed over each key
    group's heads."""

    @staticmethod
    def forward(ctx, q, k, v, log_a, initial_state, scale, chunk_size):
        ext = _extension()
        inputs = [_float32(x) for x in (q, k, v, log_a)]
        s0 = torch.empty(0) if initial_state is None else _float32(initial_state)
        keep = any(ctx.needs_input_grad[:5])
        y, states = ext.forward(*inputs, s0, scale, chunk_size, keep)
        final = states[:, :, -1] if keep else states
        if keep:
            ctx.save_for_backward(*inputs, states)
        ctx.args = (scale, chunk_size)
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, log_a.dtype,
                      None if initial_state is None else initial_state.dtype)
        return y.to(v.dtype), final.clone() if keep else final

    @staticmethod
    def backward(ctx, dy, d_final):
        q, k, v, log_a, states = ctx.saved_tensors
        scale, chunk_size = ctx.args
        d_final = torch.empty(0) if d_final is None else _float32(d_final)
        dy = torch.zeros_like(v) if dy is None else _float32(dy)
        dq, dk, dv, d_log_a, d_s0 = _extension().backward(q, k, v, log_a, states, dy, d_final,
                                                          scale, chunk_size)
        q_dt, k_dt, v_dt, a_dt, s_dt = ctx.dtypes
        return (dq.to(q_dt), dk.to(k_dt), dv.to(v_dt), d_log_a.to(a_dt),
                None if s_dt is None else d_s0.to(s_dt), None, None)


def ssd_chunked_cpu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_a: torch.Tensor,
    *,
    scale: float = 1.0,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD by the C++ CPU kernel (differentiable in q, k, v, log_a, initial_state).

    Same shapes and return convention as :func:`~anatomy.kernels.ssd.chunk.ssd_chunked`; CPU
    tensors, float32 or half precision (computed in float32). Raises RuntimeError when the
    kernel is unavailable (see :func:`cpu_kernel_available`).
    """
    check_ssd_inputs(q, k, v, log_a, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1 but got {chunk_size}")
    if not cpu_kernel_takes(q, k, v, log_a):
        raise ValueError("the CPU kernel takes CPU tensors in float32 or half precision")
    if not cpu_kernel_available():
        raise RuntimeError("the CPU SSD kernel is unavailable (see the warning above, or "
                           "ANATOMY_CPU_KERNEL=0); use backend='torch'")
    y, final_state = _SSDCpu.apply(q, k, v, log_a, initial_state, scale, chunk_size)
    return (y, final_state) if output_final_state else y
