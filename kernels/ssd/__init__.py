"""SSD (state space duality) kernels: decayed causal linear attention in every form.

Naive quadratic reference, recurrent step/scan, PyTorch chunked (any device), a C++ chunked
kernel for CPUs and Triton chunked kernels for GPUs; ``ssd`` dispatches.
"""

from __future__ import annotations

import torch

from .chunk import ssd_chunked
from .cpu_chunk import cpu_kernel_available, cpu_kernel_takes, ssd_chunked_cpu
from .naive import segment_sum, ssd_naive
from .op import OP_BACKENDS, ssd_chunked_op, tracing
from .recurrent import ssd_recurrent, ssd_step
from .validate import check_ssd_inputs

BACKENDS = ("auto", "torch", "cpu", "triton", "naive", "recurrent")


def triton_available() -> bool:
    """True when triton imports (it is an optional dependency)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_takes(v: torch.Tensor, chunk_size: int) -> bool:
    """Whether the Triton kernels take these inputs: CUDA tensors, triton importable, and a
    chunk that is a power of two >= 16 (their tiles); `auto` falls back to PyTorch otherwise."""
    return (v.is_cuda and chunk_size >= 16 and not chunk_size & (chunk_size - 1)
            and triton_available())


def auto_backend(*tensors: torch.Tensor | None, chunk_size: int = 64) -> str:
    """The backend ``backend="auto"`` picks for these inputs: Triton for CUDA tensors when
    it takes them (`triton_takes`); the C++ kernel for CPU tensors in float32 or half
    precision when it builds (not under torch.compile, which cannot trace it); the PyTorch
    chunked path otherwise."""
    v = tensors[2]
    if triton_takes(v, chunk_size):
        return "triton"
    if (not torch.compiler.is_compiling() and cpu_kernel_takes(*tensors)
            and cpu_kernel_available()):
        return "cpu"
    return "torch"


def ssd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_a: torch.Tensor,
    *,
    scale: float = 1.0,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """y_t = scale * sum_{s<=t} exp(sum_{i=s+1..t} log_a_i) (q_t . k_s) v_s  (+ initial state).

    q, k: [B, T, G, N]; v: [B, T, H, P]; log_a: [B, T, H] (G divides H; head h reads group
    h // (H // G)); initial_state: [B, H, N, P]. Returns y [B, T, H, P] in v's dtype, or
    (y, final_state [B, H, N, P]) when ``output_final_state``. State convention:
    S_t = exp(log_a_t) S_{t-1} + k_t^T v_t, y_t = scale * q_t S_t.

    backend: "auto" (see :func:`auto_backend`), "torch" (PyTorch chunked, any device and
    dtype), "cpu" (C++ chunked kernel, CPU tensors, float32 or half precision), "triton" (also
    on CPU tensors under TRITON_INTERPRET=1), "naive", "recurrent". Under torch.compile or
    torch.export and on fake or meta tensors, the chunked backends run as the custom op
    ``anatomy::ssd_chunked`` (op.py).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS} but got {backend!r}")
    check_ssd_inputs(q, k, v, log_a, initial_state)
    common = {
        "scale": scale,
        "initial_state": initial_state,
        "output_final_state": output_final_state,
    }
    if backend in OP_BACKENDS and tracing(q, k, v, log_a, initial_state):
        y, final_state = ssd_chunked_op(q, k, v, log_a, initial_state, scale, chunk_size,
                                        backend)
        return (y, final_state) if output_final_state else y
    if backend == "auto":
        backend = auto_backend(q, k, v, log_a, initial_state, chunk_size=chunk_size)
    if backend == "naive":
        return ssd_naive(q, k, v, log_a, **common)
    if backend == "recurrent":
        return ssd_recurrent(q, k, v, log_a, **common)
    if backend == "cpu":
        return ssd_chunked_cpu(q, k, v, log_a, chunk_size=chunk_size, **common)
    if backend == "triton":
        from .triton_chunk import ssd_chunked_triton

        return ssd_chunked_triton(q, k, v, log_a, chunk_size=chunk_size, **common)
    return ssd_chunked(q, k, v, log_a, chunk_size=chunk_size, **common)


__all__ = [
    "BACKENDS",
    "auto_backend",
    "cpu_kernel_available",
    "segment_sum",
    "ssd",
    "ssd_chunked",
    "ssd_chunked_cpu",
    "ssd_naive",
    "ssd_recurrent",
    "ssd_step",
    "triton_available",
    "triton_takes",
]
