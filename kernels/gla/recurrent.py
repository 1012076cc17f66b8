"""Recurrent form of gated linear attention: one decode step, and the full scan as a loop of
steps.

State convention: S_t = diag(alpha_t) S_{t-1} + k_t v_t^T (k a column [N], v a row [P]),
alpha_t = exp(log_alpha_t) per key channel, y_t = scale * q_t S_t. With RWKV-6's bonus u [H, N]:
y_t = scale * (q_t S_{t-1} + (q_t * u * k_t) . v_t), the state recurrence unchanged.
"""

from __future__ import annotations

import torch

from .validate import accumulate_dtype, check_gla_inputs


def gla_step(
    q_t: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    log_alpha_t: torch.Tensor,
    state: torch.Tensor,
    scale: float = 1.0,
    bonus: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step. q_t, k_t: [B, G, N]; v_t: [B, H, P]; log_alpha_t: [B, H, N];
    state: [B, H, N, P]; bonus: [H, N]. Returns (y_t [B, H, P] in v_t's dtype, new state in
    ``state``'s dtype)."""
    B, H, N, P = state.shape
    if q_t.dim() != 3 or k_t.shape != q_t.shape:
        raise ValueError(
            f"k_t: expected the shape of q_t [B, G, N] = {tuple(q_t.shape)} but got "
            f"{tuple(k_t.shape)}"
        )
    G = q_t.shape[1]
    if tuple(q_t.shape) != (B, G, N) or H % G != 0:
        raise ValueError(
            f"q_t: expected shape [B={B}, G dividing H={H}, N={N}] but got {tuple(q_t.shape)}"
        )
    if tuple(v_t.shape) != (B, H, P):
        raise ValueError(f"v_t: expected shape {(B, H, P)} but got {tuple(v_t.shape)}")
    if tuple(log_alpha_t.shape) != (B, H, N):
        raise ValueError(
            f"log_alpha_t: expected shape {(B, H, N)} but got {tuple(log_alpha_t.shape)}"
        )
    if bonus is not None and tuple(bonus.shape) != (H, N):
        raise ValueError(f"bonus: expected shape {(H, N)} but got {tuple(bonus.shape)}")
    acc = state.dtype if state.dtype == torch.float64 else torch.float32
    R = H // G
    qh = q_t.to(acc).repeat_interleave(R, dim=1)
    kh = k_t.to(acc).repeat_interleave(R, dim=1)
    vh = v_t.to(acc)
    old = state.to(acc)
    new_state = torch.exp(log_alpha_t.to(acc))[..., None] * old + kh[..., :, None] * vh[..., None, :]
    if bonus is None:
        y_t = torch.einsum("bhn,bhnp->bhp", qh, new_state)
    else:
        current = torch.einsum("bhn,bhn->bh", qh * bonus.to(acc), kh)[..., None] * vh
        y_t = torch.einsum("bhn,bhnp->bhp", qh, old) + current
    return (scale * y_t).to(v_t.dtype), new_state.to(state.dtype)


def gla_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_alpha: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    bonus: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """GLA as a sequential scan of :func:`gla_step` over T (O(T) Python steps).

    Same shapes and return convention as :func:`~anatomy.kernels.gla.naive.gla_naive`.
    """
    dims = check_gla_inputs(q, k, v, log_alpha, initial_state, bonus)
    acc = accumulate_dtype(q, k, v, log_alpha, initial_state, bonus)
    if initial_state is None:
        state = torch.zeros(dims.B, dims.H, dims.N, dims.P, dtype=acc, device=v.device)
    else:
        state = initial_state.to(acc)
    outputs = []
    for t in range(dims.T):
        y_t, state = gla_step(q[:, t], k[:, t], v[:, t], log_alpha[:, t], state, scale, bonus)
        outputs.append(y_t)
    y = torch.stack(outputs, dim=1)
    return (y, state) if output_final_state else y
