"""Chunked delta rule for CPUs: the C++ kernel of ``cpu_chunk.cpp`` behind a
torch.autograd.Function, with a hand-derived backward.

Each (batch, head) sequence is one task (tasks run in parallel on torch's threads); a task walks
its chunks in order with its state in cache, every per-chunk product a BLAS gemm or triangular
solve (the UT transform). The forward saves only the state entering each chunk; the backward
walks the chunks in reverse and recomputes each chunk's scores and solve from it (no T-sized
intermediates). Same algebra as ``chunk.py``; float32 arithmetic (half-precision inputs are
upcast, gradients returned in the inputs' dtypes), in-chunk cumsums of the gates in float64.

Built on first use like the other C++ kernels (``kernels/cpu_build.py``: cached under
``~/.cache/anatomy``, ``ANATOMY_BUILD_DIR`` moves it); when it cannot be built or
``ANATOMY_CPU_KERNEL=0`` is set, :func:`cpu_kernel_available` is False and
``delta_rule(backend="auto")`` uses ``chunk.py`` instead.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..cpu_build import CFLAGS as BASE_CFLAGS
from ..cpu_build import load_extension
from ..ssd.cpu_chunk import cpu_kernel_takes
from .validate import check_delta_rule_inputs

SOURCE = Path(__file__).with_name("cpu_chunk.cpp")
# -fno-math-errno: lets the compiler vectorise the exp loops (glibc's vector expf)
CFLAGS = (*BASE_CFLAGS, "-fno-math-errno")

__all__ = ["cpu_kernel_available", "cpu_kernel_takes", "delta_rule_chunked_cpu"]


@functools.cache
def _extension():
    """The compiled module, or None (with a warning saying why) when it cannot be built."""
    return load_extension("delta_rule", "delta-rule", SOURCE, CFLAGS)


def cpu_kernel_available() -> bool:
    """True when the C++ kernel is built (or builds now) and loads."""
    return _extension() is not None


def _float32(x: torch.Tensor | None) -> torch.Tensor:
    if x is None:
        return torch.empty(0)
    return x.detach().to(torch.float32).contiguous()


class _DeltaRuleCpu(torch.autograd.Function):
    """Forward saves the state entering every chunk ([B, H, n + 1, N, P] float32); the backward
    walks the chunks in reverse from them. Arguments after the tensors are constants."""

    @staticmethod
    def forward(ctx, q, k, v, beta, log_a, initial_state, scale, chunk_size):
        inputs = [_float32(x) for x in (q, k, v, beta, log_a)]
        o, states = _extension().forward(*inputs, _float32(initial_state), scale, chunk_size)
        ctx.save_for_backward(*inputs, states)
        ctx.args = (scale, chunk_size)
        ctx.dtypes = [None if x is None else x.dtype
                      for x in (q, k, v, beta, log_a, initial_state)]
        return o.to(v.dtype), states[:, :, -1].clone()

    @staticmethod
    def backward(ctx, d_o, d_final):
        q, k, v, beta, log_a, states = ctx.saved_tensors
        scale, chunk_size = ctx.args
        d_o = torch.zeros_like(v) if d_o is None else _float32(d_o)
        grads = _extension().backward(q, k, v, beta, log_a, states, d_o, _float32(d_final),
                                      scale, chunk_size)
        return (*(None if dt is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)),
                None, None)


def delta_rule_chunked_cpu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    log_a: torch.Tensor | None = None,
    scale: float = 1.0,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunked delta rule by the C++ CPU kernel (differentiable in q, k, v, beta, log_a and
    initial_state).

    Same shapes and return convention as :func:`~.naive.delta_rule_naive`; CPU tensors, float32
    or half precision (computed in float32; the final state is float32). Raises ValueError for
    other devices or float64 (use backend="torch"), RuntimeError when the kernel is unavailable
    (see :func:`cpu_kernel_available`).
    """
    check_delta_rule_inputs(q, k, v, beta, log_a, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1 but got {chunk_size}")
    if not cpu_kernel_takes(q, k, v, beta, log_a, initial_state):
        raise ValueError("backend 'cpu' takes CPU tensors in float32 or half precision; "
                         "backend 'torch' takes any device and dtype")
    if not cpu_kernel_available():
        raise RuntimeError("the CPU delta-rule kernel is unavailable (see the warning above, or "
                           "ANATOMY_CPU_KERNEL=0); use backend='torch'")
    o, final_state = _DeltaRuleCpu.apply(q, k, v, beta, log_a, initial_state, scale, chunk_size)
    return (o, final_state) if output_final_state else o
