"""Quasiseparable mixer (Hydra) by its explicit T x T matrix, built from the definition.

M = scale * (strictly-lower SS + strictly-upper SS) + diag; Y = M X per head. See
``anatomy.kernels.quasiseparable`` for the index convention derived from shift and flip.
"""

from __future__ import annotations

import torch

from ..ssd.naive import expand_groups, segment_sum
from .validate import check_quasiseparable_inputs


def quasiseparable_matrix(
    q_fwd: torch.Tensor,
    k_fwd: torch.Tensor,
    q_bwd: torch.Tensor,
    k_bwd: torch.Tensor,
    log_a_fwd: torch.Tensor,
    log_a_bwd: torch.Tensor,
    diag: torch.Tensor,
    *,
    heads: int,
    scale: float = 1.0,
) -> torch.Tensor:
    """The mixing matrix M [B, H, T, T] (float32, or float64 for float64 inputs).

    M[t, s] = scale * exp(sum_{i=s+1..t-1} log_a_fwd_i) (q_fwd_{t-1} . k_fwd_s)   for s < t
    M[t, s] = scale * exp(sum_{i=t+1..s-1} log_a_bwd_i) (q_bwd_{t+1} . k_bwd_s)   for s > t
    M[t, t] = diag_t
    """
    acc = torch.float64 if q_fwd.dtype == torch.float64 else torch.float32
    B, T = q_fwd.shape[:2]

    def direction(q: torch.Tensor, k: torch.Tensor, log_a: torch.Tensor) -> torch.Tensor:
        """W[t', s] = exp(sum_{i=s+1..t'} log_a_i) (q_t' . k_s) for s <= t', else 0."""
        qh, kh = expand_groups(q.to(acc), heads), expand_groups(k.to(acc), heads)
        decay = torch.exp(segment_sum(log_a.to(acc).transpose(1, 2)))  # [B, H, T, T]
        return decay * torch.einsum("bthn,bshn->bhts", qh, kh)

    M = torch.zeros(B, heads, T, T, dtype=acc, device=q_fwd.device)
    if T > 1:
        lower = direction(q_fwd, k_fwd, log_a_fwd)  # row t' = t - 1 of the shifted output
        M[:, :, 1:, :-1] += scale * lower[:, :, :-1, :-1]
        # Upper: entry (t, s) = W_bwd[s - 1, t] with the query read at t + 1.
        decay_bwd = torch.exp(segment_sum(log_a_bwd.to(acc).transpose(1, 2)))  # [B,H,s',t]
        qh = expand_groups(q_bwd.to(acc), heads)
        kh = expand_groups(k_bwd.to(acc), heads)
        scores = torch.einsum("bthn,bshn->bhts", qh[:, 1:], kh[:, 1:])  # (t+1) . s
        M[:, :, :-1, 1:] += scale * decay_bwd[:, :, :-1, :-1].transpose(-1, -2) * scores
    d = diag.to(acc)
    d = d.expand(B, T, heads) if d.dim() == 1 else d
    return M + torch.diag_embed(d.transpose(1, 2))


def quasiseparable_naive(
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
) -> torch.Tensor:
    """Y[b, t, h] = sum_s M[b, h, t, s] v[b, s, h] with M from :func:`quasiseparable_matrix`."""
    check_quasiseparable_inputs(q_fwd, k_fwd, q_bwd, k_bwd, v, log_a_fwd, log_a_bwd, diag)
    M = quasiseparable_matrix(
        q_fwd, k_fwd, q_bwd, k_bwd, log_a_fwd, log_a_bwd, diag, heads=v.shape[2], scale=scale
    )
    return torch.einsum("bhts,bshp->bthp", M, v.to(M.dtype)).to(v.dtype)
