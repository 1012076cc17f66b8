"""Recurrent form of SSD: one decode step, and the full scan as a loop of steps.

State convention: S_t = a_t S_{t-1} + k_t^T v_t (k a column [N], v a row [P]),
y_t = scale * q_t S_t, with a_t = exp(log_a_t). Used for token-by-token decoding.
"""

from __future__ import annotations

import torch

from .validate import accumulate_dtype, check_ssd_inputs


def ssd_step(
    q_t: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    log_a_t: torch.Tensor,
    state: torch.Tensor,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step. q_t, k_t: [B, G, N]; v_t: [B, H, P]; log_a_t: [B, H];
    state: [B, H, N, P]. Returns (y_t [B, H, P] in v_t's dtype, new state in ``state``'s dtype).
    """
    B, H, N, P = state.shape
    if q_t.dim() != 3 or k_t.shape != q_t.shape:
        raise ValueError(
            f"k_t: expected the shape of q_t [B, G, N] = {tuple(q_t.shape)} but got "
            f"{tuple(k_t.shape)}"
        )
    G = q_t.shape[1]
    if tuple(v_t.shape) != (B, H, P):
        raise ValueError(f"v_t: expected shape {(B, H, P)} but got {tuple(v_t.shape)}")
    if tuple(log_a_t.shape) != (B, H):
        raise ValueError(f"log_a_t: expected shape {(B, H)} but got {tuple(log_a_t.shape)}")
    if tuple(q_t.shape) != (B, G, N) or H % G != 0:
        raise ValueError(
            f"q_t: expected shape [B={B}, G dividing H={H}, N={N}] but got {tuple(q_t.shape)}"
        )
    acc = state.dtype if state.dtype == torch.float64 else torch.float32
    R = H // G
    qh = q_t.to(acc).repeat_interleave(R, dim=1)
    kh = k_t.to(acc).repeat_interleave(R, dim=1)
    decay = torch.exp(log_a_t.to(acc))[..., None, None]
    new_state = decay * state.to(acc) + kh[..., :, None] * v_t.to(acc)[..., None, :]
    y_t = scale * torch.einsum("bhn,bhnp->bhp", qh, new_state)
    return y_t.to(v_t.dtype), new_state.to(state.dtype)


def ssd_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_a: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SSD as a sequential scan of :func:`ssd_step` over T (O(T) Python steps).

    Same shapes and return convention as :func:`ssd_naive`.
    """
    dims = check_ssd_inputs(q, k, v, log_a, initial_state)
    acc = accumulate_dtype(q, k, v, log_a, initial_state)
    if initial_state is None:
        state = torch.zeros(dims.B, dims.H, dims.N, dims.P, dtype=acc, device=v.device)
    else:
        state = initial_state.to(acc)
    outputs = []
    for t in range(dims.T):
        y_t, state = ssd_step(q[:, t], k[:, t], v[:, t], log_a[:, t], state, scale)
        outputs.append(y_t)
    y = torch.stack(outputs, dim=1)
    return (y, state) if output_final_state else y
