"""Quadratic reference form of SSD: the definition every other form is tested against.

y_t = scale * sum_{s<=t} exp(sum_{i=s+1..t} log_a_i) (q_t . k_s) v_s
      + scale * exp(sum_{i=1..t} log_a_i) q_t . S0
It builds the [T, T] decay matrix explicitly (O(T^2) memory) from a log-space segment sum.
"""

from __future__ import annotations

import torch

from .validate import accumulate_dtype, check_ssd_inputs


def segment_sum(log_a: torch.Tensor) -> torch.Tensor:
    """Segment sums of ``log_a`` along its last axis: out[..., t, s] = sum_{i=s+1..t} log_a_i.

    Built as differences of one cumulative sum (cumsum_t - cumsum_s), -inf above the diagonal
    (s > t) so that ``exp`` of it is the causal 1-semiseparable decay mask L. Never a product
    of decays. Shape [..., T] -> [..., T, T].
    """
    cum = torch.cumsum(log_a, dim=-1)
    seg = cum[..., :, None] - cum[..., None, :]
    T = log_a.shape[-1]
    upper = torch.ones(T, T, dtype=torch.bool, device=log_a.device).triu(1)
    return seg.masked_fill(upper, float("-inf"))


def expand_groups(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, G, N] -> [B, T, H, N]: head h reads key/query group h // (H // G)."""
    return x.repeat_interleave(heads // x.shape[2], dim=2)


def ssd_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_a: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SSD by its quadratic masked-attention form Y = (L o Q K^T) V.

    q, k: [B, T, G, N]; v: [B, T, H, P]; log_a: [B, T, H]; initial_state: [B, H, N, P].
    Returns y [B, T, H, P] in v's dtype, and (if ``output_final_state``) the final state
    S_T = sum_s exp(sum_{i=s+1..T} log_a_i) k_s^T v_s + exp(sum_{i=1..T} log_a_i) S0,
    shape [B, H, N, P] in the accumulation dtype (float32, or float64 for float64 inputs).
    """
    dims = check_ssd_inputs(q, k, v, log_a, initial_state)
    acc = accumulate_dtype(q, k, v, log_a, initial_state)
    qh = expand_groups(q.to(acc), dims.H)
    kh = expand_groups(k.to(acc), dims.H)
    vh = v.to(acc)
    log_a_h = log_a.to(acc).transpose(1, 2)  # [B, H, T]
    decay = torch.exp(segment_sum(log_a_h))  # [B, H, T, S]
    scores = torch.einsum("bthn,bshn->bhts", qh, kh)
    y = torch.einsum("bhts,bshp->bthp", decay * scores, vh)
    cum = torch.cumsum(log_a_h, dim=-1)  # [B, H, T]
    if initial_state is not None:
        s0 = initial_state.to(acc)
        y = y + torch.exp(cum).transpose(1, 2)[..., None] * torch.einsum("bthn,bhnp->bthp", qh, s0)
    y = (scale * y).to(v.dtype)
    if not output_final_state:
        return y
    to_end = torch.exp(cum[..., -1:] - cum)  # [B, H, T]: decay from s to the end
    state = torch.einsum("bhs,bshn,bshp->bhnp", to_end, kh, vh)
    if initial_state is not None:
        state = state + torch.exp(cum[..., -1])[..., None, None] * initial_state.to(acc)
    return y, state
