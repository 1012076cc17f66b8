"""Quasiseparable mixer fast path: both directions in ONE chunked SSD call.

As in Hydra's reference, the forward sequence and the time-flipped backward sequence are stacked
along the batch axis, run through one chunked SSD, shifted by one step and recombined.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ssd import ssd
from .validate import check_quasiseparable_inputs


def shift(y: torch.Tensor) -> torch.Tensor:
    """Move a [B, T, ...] sequence one step later along T, zero at t = 0."""
    return F.pad(y, (0, 0) * (y.dim() - 2) + (1, 0))[:, :-1]


def quasiseparable_chunked(
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
    ssd_backend: str = "auto",
) -> torch.Tensor:
    """Y = shift(SS_fwd(X)) + flip(shift(SS_bwd(flip(X)))) + diag o X, one batched SSD call
    (``ssd_backend``: the backend of :func:`anatomy.kernels.ssd`)."""
    check_quasiseparable_inputs(q_fwd, k_fwd, q_bwd, k_bwd, v, log_a_fwd, log_a_bwd, diag)
    B = v.shape[0]
    flip = lambda x: x.flip(1)
    y_both = ssd(
        torch.cat([q_fwd, flip(q_bwd)]),
        torch.cat([k_fwd, flip(k_bwd)]),
        torch.cat([v, flip(v)]),
        torch.cat([log_a_fwd, flip(log_a_bwd)]),
        scale=scale,
        chunk_size=chunk_size,
        backend=ssd_backend,
    )
    y_both = shift(y_both)
    d = diag.to(y_both.dtype)
    return y_both[:B] + flip(y_both[B:]) + d[..., None] * v
