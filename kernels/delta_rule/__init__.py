"""Delta-rule kernels (DeltaNet, Gated DeltaNet, Kimi Delta Attention) in every form.

Naive recurrence with explicit transition matrices (the reference), recurrent step/scan (rank-one
updates, for decoding), PyTorch chunked through the UT transform (any device) and a C++ chunked
kernel for CPUs with a hand-derived backward; ``delta_rule`` dispatches.
"""

from __future__ import annotations

import torch

from ..ssd import tracing, triton_takes
from .chunk import delta_rule_chunked
from .cpu_chunk import cpu_kernel_available, cpu_kernel_takes, delta_rule_chunked_cpu
from .naive import delta_rule_naive
from .op import OP_BACKENDS, delta_rule_op
from .recurrent import delta_rule_recurrent, delta_rule_step
from .validate import check_delta_rule_inputs

BACKENDS = ("auto", "torch", "cpu", "triton", "naive", "recurrent")


def auto_backend(*tensors: torch.Tensor | None, chunk_size: int = 64) -> str:
    """The backend ``backend="auto"`` picks: the C++ kernel for CPU tensors in float32 or half
    precision when it builds (not under torch.compile, which cannot trace it); the PyTorch
    chunked path otherwise. Triton for CUDA tensors it takes (`triton_takes`; not under
    torch.compile either)."""
    if not torch.compiler.is_compiling() and triton_takes(tensors[2], chunk_size):
        return "triton"
    if (not torch.compiler.is_compiling() and cpu_kernel_takes(*tensors)
            and cpu_kernel_available()):
        return "cpu"
    return "torch"


def delta_rule(
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
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """o_t = scale * q_t^T S_t with S_t = (I - beta_t k_t k_t^T) diag(alpha_t) S_{t-1}
    + beta_t k_t v_t^T, alpha_t = exp(log_a_t).

    q, k: [B, T, H, N]; v: [B, T, H, P]; beta: [B, T, H]; log_a: None (DeltaNet), [B, T, H]
    (Gated DeltaNet, one gate per head) or [B, T, H, N] (KDA, one gate per key channel, applied
    to the old state before the delta update); initial_state: [B, H, N, P]. Returns o
    [B, T, H, P] in v's dtype, or (o, final_state [B, H, N, P]) when ``output_final_state``
    (float32, float64 for float64 inputs).

    backend: "auto" (see :func:`auto_backend`), "torch" (PyTorch chunked, any device and
    dtype), "cpu" (C++ chunked kernel, CPU tensors, float32 or half precision), "triton"
    (Triton chunked kernels, CUDA tensors, or CPU tensors under TRITON_INTERPRET=1; chunk_size
    a power of two >= 16), "naive", "recurrent". Under torch.compile or torch.export and on
    fake or meta tensors, the chunked backends and the recurrence run as the custom op
    ``anatomy::delta_rule`` (op.py).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS} but got {backend!r}")
    check_delta_rule_inputs(q, k, v, beta, log_a, initial_state)
    common = {
        "log_a": log_a,
        "scale": scale,
        "initial_state": initial_state,
        "output_final_state": output_final_state,
    }
    if backend in OP_BACKENDS and tracing(q, k, v, beta, log_a, initial_state):
        o, final_state = delta_rule_op(q, k, v, beta, log_a, initial_state, scale, chunk_size,
                                       backend)
        return (o, final_state) if output_final_state else o
    if backend == "auto":
        backend = auto_backend(q, k, v, beta, log_a, initial_state, chunk_size=chunk_size)
    if backend == "naive":
        return delta_rule_naive(q, k, v, beta, **common)
    if backend == "recurrent":
        return delta_rule_recurrent(q, k, v, beta, **common)
    if backend == "cpu":
        return delta_rule_chunked_cpu(q, k, v, beta, chunk_size=chunk_size, **common)
    if backend == "triton":
        from .triton_chunk import delta_rule_chunked_triton

        return delta_rule_chunked_triton(q, k, v, beta, chunk_size=chunk_size, **common)
    return delta_rule_chunked(q, k, v, beta, chunk_size=chunk_size, **common)


__all__ = [
    "BACKENDS",
    "auto_backend",
    "cpu_kernel_available",
    "delta_rule",
    "delta_rule_chunked",
    "delta_rule_chunked_cpu",
    "delta_rule_naive",
    "delta_rule_recurrent",
    "delta_rule_step",
]
