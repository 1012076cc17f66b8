"""Reference form of the delta rule: the recurrence with its transition matrix written out.

The definition every other form is tested against (the papers' equations, one step at a time):

    S_t = (I - beta_t k_t k_t^T) diag(alpha_t) S_{t-1} + beta_t k_t v_t^T,   o_t = scale q_t^T S_t

with S [N, P], k_t a column [N], v_t a row [P], alpha_t = exp(log_a_t): 1 for DeltaNet (log_a
None), a scalar per head for Gated DeltaNet (log_a [B, T, H]), a vector over the N key channels
for KDA (log_a [B, T, H, N]). The gate acts on the old state before the delta update, as in KDA's
paper and fla's ``naive_recurrent_kda``; for a scalar gate the order does not matter. The [N, N]
transition is built explicitly (O(T N^2 (N + P)) work): slow, but a literal reading.
"""

from __future__ import annotations

import torch

from ..ssd.validate import accumulate_dtype
from .validate import check_delta_rule_inputs, gate_per_channel


def delta_rule_naive(
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
    """The delta rule by its recurrence with explicit [N, N] transition matrices.

    q, k: [B, T, H, N]; v: [B, T, H, P]; beta: [B, T, H]; log_a: None, [B, T, H] or
    [B, T, H, N]; initial_state: [B, H, N, P]. Returns o [B, T, H, P] in v's dtype, and (if
    ``output_final_state``) the final state [B, H, N, P] in the accumulation dtype (float32, or
    float64 for float64 inputs).
    """
    dims = check_delta_rule_inputs(q, k, v, beta, log_a, initial_state)
    acc = accumulate_dtype(q, k, v, beta, log_a, initial_state)
    out_dtype = v.dtype
    q, k, v, beta = (x.to(acc) for x in (q, k, v, beta))
    gate = gate_per_channel(log_a)
    eye = torch.eye(dims.N, dtype=acc, device=v.device)
    if initial_state is None:
        S = torch.zeros(dims.B, dims.H, dims.N, dims.P, dtype=acc, device=v.device)
    else:
        S = initial_state.to(acc)
    outputs = []
    for t in range(dims.T):
        k_t, b_t = k[:, t], beta[:, t, :, None, None]
        transition = eye - b_t * k_t[..., :, None] * k_t[..., None, :]  # I - beta k k^T
        if gate is not None:
            transition = transition * torch.exp(gate[:, t].to(acc))[..., None, :]  # @ diag(alpha)
        S = transition @ S + b_t * k_t[..., :, None] * v[:, t, :, None, :]
        outputs.append(scale * torch.einsum("bhn,bhnp->bhp", q[:, t], S))
    o = torch.stack(outputs, dim=1).to(out_dtype)
    return (o, S) if output_final_state else o
