"""Chunked GLA for CPUs: the C++ kernel of ``cpu_chunk.cpp`` behind a torch.autograd.Function.

Each (batch, head) sequence is one task (tasks run in parallel on torch's threads); a task walks
its chunks in order with its state in cache, every per-chunk product a BLAS gemm. Same algebra
and numerics as ``chunk.py`` (in-chunk cumsums in float64, sub-block references), float32
arithmetic (half-precision inputs are upcast).

Built on first use like the other C++ kernels (``kernels/cpu_build.py``: about 20 s, cached under
``~/.cache/anatomy``, ``ANATOMY_BUILD_DIR`` moves it); when it cannot be built or
``ANATOMY_CPU_KERNEL=0`` is set, :func:`cpu_kernel_available` is False and
``gla(backend="auto")`` uses ``chunk.py`` instead.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..cpu_build import CFLAGS as BASE_CFLAGS
from ..cpu_build import load_extension
from ..ssd.cpu_chunk import cpu_kernel_takes
from .validate import check_gla_inputs

SOURCE = Path(__file__).with_name("cpu_chunk.cpp")
# -fno-math-errno: lets the compiler vectorise the exp loops (glibc's vector expf)
CFLAGS = (*BASE_CFLAGS, "-fno-math-errno")

__all__ = ["cpu_kernel_available", "cpu_kernel_takes", "gla_chunked_cpu"]


@functools.cache
def _extension():
    """The compiled module, or None (with a warning saying why) when it cannot be built."""
    return load_extension("gla", "GLA", SOURCE, CFLAGS)


def cpu_kernel_available() -> bool:
    """True when the C++ kernel is built (or builds now) and loads."""
    return _extension() is not None


def _float32(x: torch.Tensor | None) -> torch.Tensor:
    if x is None:
        return torch.empty(0)
    return x.detach().to(torch.float32).contiguous()


class _GLACpu(torch.autograd.Function):
    """Forward saves the state entering every chunk ([B, H, n + 1, N, P] float32); the backward
    walks the chunks in reverse from them. Arguments after the tensors are constants."""

    @staticmethod
    def forward(ctx, q, k, v, log_alpha, initial_state, bonus, scale, chunk_size):
        inputs = [_float32(x) for x in (q, k, v, log_alpha)]
        u = _float32(bonus)
        y, states = _extension().forward(*inputs, _float32(initial_state), u, scale, chunk_size)
        ctx.save_for_backward(*inputs, u, states)
        ctx.args = (scale, chunk_size, q.shape[2])
        ctx.dtypes = [None if x is None else x.dtype
                      for x in (q, k, v, log_alpha, initial_state, bonus)]
        return y.to(v.dtype), states[:, :, -1].clone()

    @staticmethod
    def backward(ctx, dy, d_final):
        q, k, v, log_alpha, u, states = ctx.saved_tensors
        scale, chunk_size, groups = ctx.args
        dy = torch.zeros_like(v) if dy is None else _float32(dy)
        dq, dk, dv, d_log_alpha, d_s0, d_u = _extension().backward(
            q, k, v, log_alpha, u, states, dy, _float32(d_final), scale, chunk_size)
        B, T, H, N = dq.shape
        dq, dk = (x.view(B, T, groups, H // groups, N).sum(3) for x in (dq, dk))
        grads = [dq, dk, dv, d_log_alpha, d_s0, d_u.sum(0)]
        return (*(None if dt is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)),
                None, None)


def gla_chunked_cpu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_alpha: torch.Tensor,
    *,
    scale: float = 1.0,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    bonus: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunked GLA by the C++ CPU kernel (differentiable in q, k, v, log_alpha, initial_state,
    bonus).

    Same shapes and return convention as :func:`~anatomy.kernels.gla.chunk.gla_chunked`; CPU
    tensors, float32 or half precision (computed in float32). Raises RuntimeError when the
    kernel is unavailable (see :func:`cpu_kernel_available`).
    """
    check_gla_inputs(q, k, v, log_alpha, initial_state, bonus)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1 but got {chunk_size}")
    if not cpu_kernel_takes(q, k, v, log_alpha, initial_state, bonus):
        raise ValueError("the CPU kernel takes CPU tensors in float32 or half precision")
    if not cpu_kernel_available():
        raise RuntimeError("the CPU GLA kernel is unavailable (see the warning above, or "
                           "ANATOMY_CPU_KERNEL=0); use backend='torch'")
    y, final_state = _GLACpu.apply(q, k, v, log_alpha, initial_state, bonus, scale, chunk_size)
    return (y, final_state) if output_final_state else y
