"""Quadratic reference form of gated linear attention (per-channel decay): the definition every
other form is tested against.

With c_t = sum_{i<=t} log_alpha_i (a vector over the key channels n),

    y_t = scale * sum_{s<=t} sum_n q_tn k_sn exp(c_tn - c_sn) v_s
        + scale * (q_t * exp(c_t)) . S0

and with RWKV-6's bonus u [H, N] the query reads the state before its own step, plus a bonus
for the current token:

    y_t = scale * sum_{s<t} sum_n q_tn k_sn exp(c_{t-1,n} - c_sn) v_s
        + scale * sum_n q_tn u_n k_tn v_t + scale * (q_t * exp(c_{t-1})) . S0.

It builds the [T, T, N] decay tensor explicitly (O(T^2 N) memory) as exp of differences of one
cumsum, -inf where masked: the exponent of every weight that is kept is <= 0 for decays.
"""

from __future__ import annotations

import torch

from ..ssd.naive import expand_groups
from .validate import accumulate_dtype, check_gla_inputs


def gla_naive(
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
    """GLA by its quadratic masked form (see the module docstring).

    q, k: [B, T, G, N]; v: [B, T, H, P]; log_alpha: [B, T, H, N]; initial_state: [B, H, N, P];
    bonus: [H, N]. Returns y [B, T, H, P] in v's dtype, and (if ``output_final_state``) the final
    state S_T = sum_s diag(exp(c_T - c_s)) k_s v_s^T + diag(exp(c_T)) S0, [B, H, N, P] in the
    accumulation dtype (float32, or float64 for float64 inputs).
    """
    dims = check_gla_inputs(q, k, v, log_alpha, initial_state, bonus)
    acc = accumulate_dtype(q, k, v, log_alpha, initial_state, bonus)
    T = dims.T
    qh = expand_groups(q.to(acc), dims.H).transpose(1, 2)  # [B, H, T, N]
    kh = expand_groups(k.to(acc), dims.H).transpose(1, 2)
    vh = v.to(acc).transpose(1, 2)  # [B, H, T, P]
    cum = torch.cumsum(log_alpha.to(acc).transpose(1, 2), dim=2)  # [B, H, T, N]
    # the decay the query at t applies: c_t, or c_{t-1} (c_{-1} = 0) with the bonus
    cum_q = cum if bonus is None else torch.cat([torch.zeros_like(cum[:, :, :1]), cum[:, :, :-1]], 2)
    diagonal = 0 if bonus is None else -1  # with the bonus, s < t only
    keep = torch.ones(T, T, dtype=torch.bool, device=v.device).tril(diagonal)
    seg = cum_q[:, :, :, None, :] - cum[:, :, None, :, :]  # [B, H, T, S, N]
    decay = seg.masked_fill(~keep[:, :, None], float("-inf")).exp()
    scores = torch.einsum("bhtn,bhsn,bhtsn->bhts", qh, kh, decay)
    if bonus is not None:
        u = bonus.to(acc)[None, :, None, :]
        scores = scores + torch.diag_embed(torch.einsum("bhtn,bhtn->bht", qh * u, kh))
    y = torch.einsum("bhts,bhsp->bhtp", scores, vh)
    if initial_state is not None:
        s0 = initial_state.to(acc)
        y = y + torch.einsum("bhtn,bhnp->bhtp", qh * torch.exp(cum_q), s0)
    y = (scale * y).transpose(1, 2).to(v.dtype)
    if not output_final_state:
        return y
    to_end = torch.exp(cum[:, :, -1:] - cum)  # [B, H, T, N]: decay from s to the end
    state = torch.einsum("bhsn,bhsp->bhnp", kh * to_end, vh)
    if initial_state is not None:
        state = state + torch.exp(cum[:, :, -1])[..., None] * initial_state.to(acc)
    return y, state
