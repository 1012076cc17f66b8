"""Recurrent form of the delta rule: one decode step, and the full scan as a loop of steps.

A step is the rank-one update (no [N, N] matrix): with the gated old state S' = diag(alpha_t)
S_{t-1}, the new value written is u_t = beta_t (v_t - S'^T k_t) and S_t = S' + k_t u_t^T, which
is (I - beta_t k_t k_t^T) diag(alpha_t) S_{t-1} + beta_t k_t v_t^T; o_t = scale q_t^T S_t.
Used for token-by-token decoding after a chunked prefill (the final state seeds it).
"""

from __future__ import annotations

import torch

from ..ssd.validate import accumulate_dtype
from .validate import check_delta_rule_inputs


def delta_rule_step(
    q_t: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    beta_t: torch.Tensor,
    state: torch.Tensor,
    *,
    log_a_t: torch.Tensor | None = None,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step. q_t, k_t: [B, H, N]; v_t: [B, H, P]; beta_t: [B, H]; log_a_t: None,
    [B, H] or [B, H, N]; state: [B, H, N, P]. Returns (o_t [B, H, P] in v_t's dtype, the new
    state in ``state``'s dtype)."""
    B, H, N, P = state.shape
    for name, x, shape in (("q_t", q_t, (B, H, N)), ("k_t", k_t, (B, H, N)),
                           ("v_t", v_t, (B, H, P)), ("beta_t", beta_t, (B, H))):
        if tuple(x.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape} but got {tuple(x.shape)}")
    if log_a_t is not None and tuple(log_a_t.shape) not in ((B, H), (B, H, N)):
        raise ValueError(f"log_a_t: expected shape {(B, H)} or {(B, H, N)} but got "
                         f"{tuple(log_a_t.shape)}")
    acc = state.dtype if state.dtype == torch.float64 else torch.float32
    S = state.to(acc)
    if log_a_t is not None:
        alpha = torch.exp(log_a_t.to(acc))
        S = S * (alpha[..., None] if alpha.dim() == 3 else alpha[..., None, None])
    k = k_t.to(acc)
    u = beta_t.to(acc)[..., None] * (v_t.to(acc) - torch.einsum("bhn,bhnp->bhp", k, S))
    S = S + k[..., :, None] * u[..., None, :]
    o_t = scale * torch.einsum("bhn,bhnp->bhp", q_t.to(acc), S)
    return o_t.to(v_t.dtype), S.to(state.dtype)


def delta_rule_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    log_a: torch.Tensor | None = None,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The delta rule as a sequential scan of :func:`delta_rule_step` over T (O(T) Python
    steps). Same shapes and return convention as :func:`~.naive.delta_rule_naive`."""
    dims = check_delta_rule_inputs(q, k, v, beta, log_a, initial_state)
    acc = accumulate_dtype(q, k, v, beta, log_a, initial_state)
    if initial_state is None:
        state = torch.zeros(dims.B, dims.H, dims.N, dims.P, dtype=acc, device=v.device)
    else:
        state = initial_state.to(acc)
    outputs = []
    for t in range(dims.T):
        o_t, state = delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], state,
                                     log_a_t=None if log_a is None else log_a[:, t], scale=scale)
        outputs.append(o_t)
    o = torch.stack(outputs, dim=1)
    return (o, state) if output_final_state else o
