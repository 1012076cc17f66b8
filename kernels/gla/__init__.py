"""Gated linear attention kernels (per-channel decay: GLA, RWKV-6 with its bonus, HGRN-2).

Naive quadratic reference, recurrent step/scan, PyTorch chunked (any device), a C++ chunked
kernel for CPUs and Triton chunked kernels for GPUs; ``gla`` dispatches.
"""

from __future__ import annotations

import torch

from ..ssd import tracing, triton_takes
from .chunk import gla_chunked
from .cpu_chunk import cpu_kernel_available, cpu_kernel_takes, gla_chunked_cpu
from .naive import gla_naive
from .op import OP_BACKENDS, gla_chunked_op
from .recurrent import gla_recurrent, gla_step
from .validate import check_gla_inputs

BACKENDS = ("auto", "torch", "cpu", "triton", "naive", "recurrent")


def auto_backend(*tensors: torch.Tensor | None, chunk_size: int = 64) -> str:
    """The backend ``backend="auto"`` picks: Triton for CUDA tensors it takes; the
    C++ kernel for CPU tensors in float32 or half precision when it builds; the PyTorch chunked
    path otherwise (and always under torch.compile, which traces neither kernel)."""
    if torch.compiler.is_compiling():
        return "torch"
    if triton_takes(tensors[2], chunk_size):
        return "triton"
    if cpu_kernel_takes(*tensors) and cpu_kernel_available():
        return "cpu"
    return "torch"


def gla(
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
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """y_t = scale * q_t S_t with S_t = diag(exp(log_alpha_t)) S_{t-1} + k_t v_t^T, S_{-1} =
    initial_state; with ``bonus`` u (RWKV-6): y_t = scale * (q_t S_{t-1} + (q_t * u * k_t) . v_t).

    q, k: [B, T, G, N]; v: [B, T, H, P]; log_alpha: [B, T, H, N] (<= 0: decays, per key
    channel); initial_state: [B, H, N, P]; bonus: [H, N] (G divides H; head h reads group
    h // (H // G)). Returns y [B, T, H, P] in v's dtype, or (y, final_state [B, H, N, P]) when
    ``output_final_state`` (float32, float64 for float64 inputs).

    backend: "auto" (see :func:`auto_backend`), "torch" (PyTorch chunked, any device and
    dtype), "cpu" (C++ chunked kernel, CPU tensors, float32 or half precision), "triton"
    (Triton chunked kernels, CUDA tensors, or CPU tensors under TRITON_INTERPRET=1; chunk_size
    a power of two >= 16), "naive" (quadratic reference), "recurrent" (a loop of
    :func:`gla_step`). Under torch.compile or torch.export and on fake or meta tensors, the
    chunked backends run as the custom op ``anatomy::gla_chunked`` (op.py).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS} but got {backend!r}")
    check_gla_inputs(q, k, v, log_alpha, initial_state, bonus)
    common = {
        "scale": scale,
        "initial_state": initial_state,
        "output_final_state": output_final_state,
        "bonus": bonus,
    }
    if backend in OP_BACKENDS and tracing(q, k, v, log_alpha, initial_state, bonus):
        y, final_state = gla_chunked_op(q, k, v, log_alpha, initial_state, bonus, scale,
                                        chunk_size, backend)
        return (y, final_state) if output_final_state else y
    if backend == "auto":
        backend = auto_backend(q, k, v, log_alpha, initial_state, bonus, chunk_size=chunk_size)
    if backend == "naive":
        return gla_naive(q, k, v, log_alpha, **common)
    if backend == "recurrent":
        return gla_recurrent(q, k, v, log_alpha, **common)
    if backend == "cpu":
        return gla_chunked_cpu(q, k, v, log_alpha, chunk_size=chunk_size, **common)
    if backend == "triton":
        from .triton_chunk import gla_chunked_triton

        return gla_chunked_triton(q, k, v, log_alpha, chunk_size=chunk_size, **common)
    return gla_chunked(q, k, v, log_alpha, chunk_size=chunk_size, **common)


__all__ = [
    "BACKENDS",
    "auto_backend",
    "cpu_kernel_available",
    "gla",
    "gla_chunked",
    "gla_chunked_cpu",
    "gla_naive",
    "gla_recurrent",
    "gla_step",
]
