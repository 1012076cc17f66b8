"""Quasiseparable (Hydra) mixers: strictly-lower SS + strictly-upper SS + a free diagonal.

Explicit-matrix reference and a fast path running both directions in one chunked SSD call.

Index convention (derived from QS(X) = shift(SS_f(X)) + flip(shift(SS_b(flip X))) + D X, with SS
the causal SSD of :func:`anatomy.kernels.ssd`): for per-head mixing matrix M,

    M[t, s] = scale * exp(sum_{i=s+1..t-1} log_a_fwd_i) (q_fwd_{t-1} . k_fwd_s)   (s < t)
    M[t, s] = scale * exp(sum_{i=t+1..s-1} log_a_bwd_i) (q_bwd_{t+1} . k_bwd_s)   (s > t)
    M[t, t] = diag_t

The shift makes the lower part strictly lower by reading row t - 1 of the SS matrix: its query is
q_{t-1} and its decay ends at index t - 1 (a_t does not survive; a_{s+1} does). All tensors are
given in natural time order; the backward ones are flipped internally.
"""

from __future__ import annotations

import torch

from .chunk import quasiseparable_chunked, shift
from .naive import quasiseparable_matrix, quasiseparable_naive

BACKENDS = ("auto", "torch", "cpu", "triton", "naive")


def quasiseparable(
    q_fwd: torch.Tensor,
    k_fwd: torch.Tensor,
    q_bwd: torch.Tensor,
    k_bwd: torch.Tensor,
    v: torch.Tensor,
    log_a_fwd: torch.Tensor,
    log_a_bwd: torch.Tensor,
    diag: torch.Tensor,
    *,
    scale: float = 1.0,
    chunk_size: int = 64,
    backend: str = "auto",
) -> torch.Tensor:
    """Hydra's quasiseparable mixer Y = M X (index convention in the module docstring).

    q_fwd, k_fwd, q_bwd, k_bwd: [B, T, G, N]; v: [B, T, H, P]; log_a_fwd, log_a_bwd: [B, T, H];
    diag: [B, T, H] (data dependent) or [H]. Returns Y [B, T, H, P] in v's dtype.
    backend: "naive" (the explicit matrix), or the SSD backend ("auto", "torch", "cpu",
    "triton"; see :func:`anatomy.kernels.ssd`) of the one chunked SSD call over a stacked batch
    of 2B.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS} but got {backend!r}")
    args = (q_fwd, k_fwd, q_bwd, k_bwd, v, log_a_fwd, log_a_bwd, diag)
    if backend == "naive":
        return quasiseparable_naive(*args, scale=scale)
    return quasiseparable_chunked(*args, scale=scale, chunk_size=chunk_size, ssd_backend=backend)


__all__ = [
    "quasiseparable",
    "quasiseparable_chunked",
    "quasiseparable_matrix",
    "quasiseparable_naive",
    "shift",
]
