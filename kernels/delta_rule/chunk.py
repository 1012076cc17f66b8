"""Chunked delta rule in PyTorch: the WY representation / UT transform (Yang et al. 2024,
"Parallelizing Linear Transformers with the Delta Rule over Sequence Length"), with Gated
DeltaNet's scalar gate and KDA's per-channel gate in log space.

T is cut into chunks of C steps (the last one zero-padded: k = v = q = 0, beta = 0, log_a = 0
are identity steps). Within a chunk, with g_t the in-chunk cumsum of log_a (a vector over the N
key channels; a scalar broadcast for Gated DeltaNet; absent for DeltaNet) and S_0 the state
entering the chunk, the recurrence S_t = (I - beta_t k_t k_t^T) diag(e^{g_t - g_{t-1}}) S_{t-1}
+ beta_t k_t v_t^T unrolls to

    S_t = e^{g_t} S_0 + sum_{s<=t} e^{g_t - g_s} k_s u_s^T,
    u_t = beta_t (v_t - S_0^T (e^{g_t} k_t) - sum_{s<t} (k_t . e^{g_t - g_s} k_s) u_s),

(products with e^{...} per channel), i.e. (I + diag(beta) A) U = diag(beta) (V - K~ S_0) with A
strictly lower, A_ts = sum_n k_tn k_sn e^{g_tn - g_sn}, K~ = e^{g} k. One triangular solve per
chunk (the UT transform) gives W = (I + diag(beta) A)^{-1} diag(beta) K~ and
U' = (I + diag(beta) A)^{-1} diag(beta) V, so U = U' - W S_0. Then per chunk

    o        = scale (Q~ S_0 + (M_qk U)),   Q~ = e^{g} q,  M_qk lower (incl.) like A with q
    S_next   = (diag(e^{g_C}) - K^T W) S_0 + K^T U',   K = e^{g_C - g} k.

The chunk-to-chunk recurrence is one [N, N] x [N, P] matmul-add per chunk (all heads at once);
everything else is batched over all chunks. Autograd runs through these PyTorch ops.

Decays in log space: K~, Q~ and K carry e^{g_t}, e^{g_C - g_t} <= 1 (for log_a <= 0). The
pairwise factors e^{g_t - g_s} of A and M_qk are either factorised around the chunk's mid-range
m (e^{g_t - m} e^{m - g_s}, each within e^{+-20}) when every chunk's spread of g is at most
``MAX_FACTORISED_SPAN``, or computed exactly on sub-chunks of ``SUB_CHUNK`` steps: blocks below
the diagonal factorised around the block row's start (both factors <= 1), diagonal blocks as
masked exponentials of differences. Half-precision inputs are computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ssd.validate import accumulate_dtype
from .validate import check_delta_rule_inputs, gate_per_channel

MAX_FACTORISED_SPAN = 40.0  # largest in-chunk spread of g for the factorised path
SUB_CHUNK = 16  # sub-chunk size of the exact path's diagonal blocks


def _lower(x: torch.Tensor, strict: bool) -> torch.Tensor:
    return torch.tril(x, diagonal=-1 if strict else 0)


def _decayed_scores_exact(x, y, g, strict):
    """The same scores for any decay: per block row of SUB_CHUNK steps starting at j0, the
    columns s < j0 through the reference g_{j0-1} (e^{g_t - g_ref} <= 1 and e^{g_ref - g_s} <= 1
    for log_a <= 0), the diagonal block as masked e^{g_t - g_s} summed over channels."""
    C = x.shape[-2]
    rows = []
    for j0 in range(0, C, SUB_CHUNK):
        j1 = min(j0 + SUB_CHUNK, C)
        xj, gj = x[..., j0:j1, :], g[..., j0:j1, :]
        pieces = []
        if j0 > 0:
            ref = g[..., j0 - 1 : j0, :]
            left = y[..., :j0, :] * torch.exp(ref - g[..., :j0, :])
            pieces.append((xj * torch.exp(gj - ref)) @ left.transpose(-1, -2))
        diff = gj[..., :, None, :] - gj[..., None, :, :]  # [..., c, c, N or 1]
        keep = torch.ones(j1 - j0, j1 - j0, dtype=torch.bool, device=x.device)
        keep = _lower(keep, strict)[..., None]
        decay = torch.exp(diff.masked_fill(~keep, float("-inf")))
        pieces.append(((xj[..., :, None, :] * y[..., None, j0:j1, :]) * decay).sum(-1))
        if j1 < C:
            pieces.append(x.new_zeros(*x.shape[:-2], j1 - j0, C - j1))
        rows.append(torch.cat(pieces, dim=-1))
    return torch.cat(rows, dim=-2)


def chunk_operands(qc, kc, g, factorised):
    """Per chunk: the pairwise scores A = kk (strict) and M_qk = qk (inclusive), and the decayed
    keys and queries K~ = e^{g} k, Q~ = e^{g} q, K = e^{g_C - g} k. g None means no decay.

    Factorised: one exponential e = e^{g - m} around each chunk's mid-range m, then
    e^{g_t - g_s} = e_t / e_s, e^{g} = e e^{m} and e^{g_C - g} = e^{g_C - m} / e."""
    if g is None:
        return (_lower(kc @ kc.transpose(-1, -2), True), _lower(qc @ kc.transpose(-1, -2), False),
                kc, qc, kc)
    if factorised:
        mid = (0.5 * (g.amax(dim=-2, keepdim=True) + g.amin(dim=-2, keepdim=True))).detach()
        e = torch.exp(g - mid)
        kf, qf, kr = kc * e, qc * e, kc / e
        kk = _lower(kf @ kr.transpose(-1, -2), True)
        qk = _lower(qf @ kr.transpose(-1, -2), False)
        to_mid = torch.exp(mid)
        return kk, qk, kf * to_mid, qf * to_mid, kr * torch.exp(g[..., -1:, :] - mid)
    kk = _decayed_scores_exact(kc, kc, g, strict=True)
    qk = _decayed_scores_exact(qc, kc, g, strict=False)
    e = torch.exp(g)
    return kk, qk, kc * e, qc * e, kc * torch.exp(g[..., -1:, :] - g)


def max_chunk_span(g: torch.Tensor) -> float:
    """The largest spread (max - min) of the in-chunk cumsum g over any chunk and channel."""
    return float((g.amax(dim=-2) - g.amin(dim=-2)).max())


def delta_rule_chunked(
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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunked delta rule (DeltaNet, Gated DeltaNet, KDA) by the UT transform, any device.

    Same shapes and return convention as :func:`~.naive.delta_rule_naive`; differentiable in
    q, k, v, beta, log_a and initial_state through PyTorch's autograd.
    """
    dims = check_delta_rule_inputs(q, k, v, beta, log_a, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1 but got {chunk_size}")
    acc = accumulate_dtype(q, k, v, beta, log_a, initial_state)
    B, T, H, N, P = dims.B, dims.T, dims.H, dims.N, dims.P
    C = chunk_size
    n = -(-T // C)

    def chunks(x: torch.Tensor) -> torch.Tensor:  # [B, T, H, D] -> [B*H, n, C, D]
        x = F.pad(x.to(acc).transpose(1, 2), (0, 0, 0, n * C - T))
        return x.reshape(B * H, n, C, x.shape[-1])

    qc, kc, vc, bc = chunks(q), chunks(k), chunks(v), chunks(beta[..., None])
    gate = gate_per_channel(log_a)
    g = None if gate is None else torch.cumsum(chunks(gate), dim=-2)  # [BH, n, C, N or 1]
    factorised = g is not None and not torch.compiler.is_compiling() and (
        max_chunk_span(g.detach()) <= MAX_FACTORISED_SPAN)

    kk, qk, k_in, q_in, k_out = chunk_operands(qc, kc, g, factorised)

    # UT transform: one unit-lower-triangular solve per chunk for W and U' together
    system = torch.eye(C, dtype=acc, device=v.device) + bc * kk
    solved = torch.linalg.solve_triangular(
        system, torch.cat([bc * k_in, bc * vc], dim=-1), upper=False, unitriangular=True)
    W, U0 = solved.split([N, P], dim=-1)

    # chunk-to-chunk recurrence S_next = M S + D, all heads in one matmul per chunk
    transfer = k_out.transpose(-1, -2) @ solved  # [BH, n, N, N + P]: K^T W | K^T U'
    if g is None:
        decay_end = torch.ones(B * H, n, N, dtype=acc, device=v.device)
    else:
        decay_end = torch.exp(g[..., -1, :]).expand(B * H, n, N)
    M = torch.diag_embed(decay_end) - transfer[..., :N]
    D = transfer[..., N:]
    if initial_state is None:
        S = torch.zeros(B * H, N, P, dtype=acc, device=v.device)
    else:
        S = initial_state.to(acc).reshape(B * H, N, P)
    entering = []
    for M_c, D_c in zip(M.unbind(1), D.unbind(1)):
        entering.append(S)
        S = torch.baddbmm(D_c, M_c, S)
    S_in = torch.stack(entering, dim=1)  # [BH, n, N, P]

    U = U0 - W @ S_in
    o = scale * (q_in @ S_in + qk @ U)  # [BH, n, C, P]
    o = o.reshape(B, H, n * C, P)[:, :, :T].transpose(1, 2).to(v.dtype)
    if not output_final_state:
        return o
    return o, S.reshape(B, H, N, P)
