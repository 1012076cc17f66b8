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
everything else is batched over all chunks. ``delta_rule_chunked`` is differentiated by
autograd through these ops; :class:`_DeltaRuleChunked` is the same forward with a backward
derived by hand (the reverse chunk recurrence, the transposed UT solve and the scores' and
decays' gradients, batched over chunks, recomputed from the state entering each chunk), for
where autograd cannot run: inside the custom op of op.py. At B = 1, H = 8, N = P = 64,
T = 2048 (one thread, CPU time) it took 1.5-2.4x autograd's backward, and at T = 8192 its peak
memory was ~1.0-1.2 GiB against autograd's ~0.7 GiB (its batched transients), so eager code
keeps autograd.

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


def _mid_range(g: torch.Tensor) -> torch.Tensor:
    """Each chunk's mid-range of g per channel (the factorised path's reference, a constant)."""
    return (0.5 * (g.amax(dim=-2, keepdim=True) + g.amin(dim=-2, keepdim=True))).detach()


def chunk_operands(qc, kc, g, factorised):
    """Per chunk: the pairwise scores A = kk (strict) and M_qk = qk (inclusive), and the decayed
    keys and queries K~ = e^{g} k, Q~ = e^{g} q, K = e^{g_C - g} k. g None means no decay.

    Factorised: one exponential e = e^{g - m} around each chunk's mid-range m, then
    e^{g_t - g_s} = e_t / e_s, e^{g} = e e^{m} and e^{g_C - g} = e^{g_C - m} / e."""
    if g is None:
        return (_lower(kc @ kc.transpose(-1, -2), True), _lower(qc @ kc.transpose(-1, -2), False),
                kc, qc, kc)
    if factorised:
        mid = _mid_range(g)
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


def _decayed_scores_exact_backward(dS, x, y, g, strict):
    """The gradients (dx, dy) of S_ts = sum_n x_tn y_sn e^{g_tn - g_sn} (masked as
    :func:`_decayed_scores_exact`, on the same sub-chunks) given dS (already masked)."""
    C = x.shape[-2]
    dx, dy = torch.zeros_like(x), torch.zeros_like(y)
    for j0 in range(0, C, SUB_CHUNK):
        j1 = min(j0 + SUB_CHUNK, C)
        xj, gj = x[..., j0:j1, :], g[..., j0:j1, :]
        if j0 > 0:
            ref = g[..., j0 - 1 : j0, :]
            right, left = torch.exp(ref - g[..., :j0, :]), torch.exp(gj - ref)
            block = dS[..., j0:j1, :j0]
            dx[..., j0:j1, :] += left * (block @ (y[..., :j0, :] * right))
            dy[..., :j0, :] += right * (block.transpose(-1, -2) @ (xj * left))
        diff = gj[..., :, None, :] - gj[..., None, :, :]
        keep = torch.ones(j1 - j0, j1 - j0, dtype=torch.bool, device=x.device)
        keep = _lower(keep, strict)[..., None]
        w = dS[..., j0:j1, j0:j1, None] * torch.exp(diff.masked_fill(~keep, float("-inf")))
        dx[..., j0:j1, :] += (w * y[..., None, j0:j1, :]).sum(-2)
        dy[..., j0:j1, :] += (w * xj[..., :, None, :]).sum(-3)
    return dx, dy


def _score_grads(dS, x, y, g, factorised):
    """(dx, dy) of the scores S = lower(x y^T) decayed by e^{g_t - g_s}, for either path (g
    None: no decay); their gradient in g is x dx - y dy (summed over the channels for a
    scalar gate)."""
    if g is None:
        return dS @ y, dS.transpose(-1, -2) @ x
    if factorised:
        e = torch.exp(g - _mid_range(g))
        return e * (dS @ (y / e)), (dS.transpose(-1, -2) @ (x * e)) / e
    return _decayed_scores_exact_backward(dS, x, y, g, strict=False)  # dS carries the mask


def _operand_grads(qc, kc, g, factorised, d_kk, d_qk, d_k_in, d_q_in, d_k_out, d_decay_end):
    """Back through :func:`chunk_operands` and e^{g_C}: (dq, dk, dg) from the gradients of kk,
    qk, K~, Q~, K and decay_end (masked like their operands; dg None without a gate)."""
    dk1, dk2 = _score_grads(d_kk, kc, kc, g, factorised)
    dq, dk3 = _score_grads(d_qk, qc, kc, g, factorised)
    dk = dk1 + dk2 + dk3
    if g is None:
        return dq + d_q_in, dk + d_k_in + d_k_out, None
    e_in, e_out = torch.exp(g), torch.exp(g[..., -1:, :] - g)
    k_in, q_in, k_out = kc * e_in, qc * e_in, kc * e_out
    dg = (kc * (dk1 - dk2) + qc * dq - kc * dk3 + k_in * d_k_in + q_in * d_q_in
          - k_out * d_k_out)
    last = (k_out * d_k_out).sum(-2) + torch.exp(g[..., -1, :]) * d_decay_end  # [BH, n, N]
    if g.shape[-1] == 1:
        dg, last = dg.sum(-1, keepdim=True), last.sum(-1, keepdim=True)
    dg[..., -1, :] += last
    return dq + e_in * d_q_in, dk + e_in * d_k_in + e_out * d_k_out, dg


def max_chunk_span(g: torch.Tensor) -> float:
    """The largest spread (max - min) of the in-chunk cumsum g over any chunk and channel."""
    return float((g.amax(dim=-2) - g.amin(dim=-2)).max())


def _to_chunks(x: torch.Tensor, acc: torch.dtype, C: int, n: int) -> torch.Tensor:
    """[B, T, H, D] -> [B*H, n, C, D] in dtype acc, T zero-padded to n * C."""
    B, T, H, D = x.shape
    x = F.pad(x.to(acc).transpose(1, 2), (0, 0, 0, n * C - T))
    return x.reshape(B * H, n, C, D)


def _from_chunks(x: torch.Tensor, B: int, T: int, H: int) -> torch.Tensor:
    """[B*H, n, C, D] -> [B, T, H, D] (padding dropped)."""
    n, C, D = x.shape[1:]
    return x.reshape(B, H, n * C, D)[:, :, :T].transpose(1, 2)


def _operands(qc, kc, g, factorised, N):
    """chunk_operands plus the decay over each whole chunk, e^{g_C} [BH, n, N] (None without a
    gate)."""
    kk, qk, k_in, q_in, k_out = chunk_operands(qc, kc, g, factorised)
    decay_end = None if g is None else torch.exp(g[..., -1, :]).expand(*g.shape[:2], N)
    return kk, qk, k_in, q_in, k_out, decay_end


def _solve(kk, k_in, vc, bc):
    """The UT transform: the unit-lower-triangular system I + diag(beta) A and its solution
    [W | U'] = (I + diag(beta) A)^{-1} diag(beta) [K~ | V]."""
    C = kk.shape[-1]
    system = torch.eye(C, dtype=kk.dtype, device=kk.device) + bc * kk
    solved = torch.linalg.solve_triangular(
        system, torch.cat([bc * k_in, bc * vc], dim=-1), upper=False, unitriangular=True)
    return system, solved


def _transfer(k_out, solved, decay_end, N):
    """The chunk-to-chunk recurrence S_next = M S + D: M = diag(e^{g_C}) - K^T W, D = K^T U'."""
    transfer = k_out.transpose(-1, -2) @ solved  # [BH, n, N, N + P]: K^T W | K^T U'
    if decay_end is None:
        M = torch.eye(N, dtype=solved.dtype, device=solved.device) - transfer[..., :N]
    else:
        M = torch.diag_embed(decay_end) - transfer[..., :N]
    return M, transfer[..., N:]


def _entering_states(M, D, S):
    """The state entering each chunk [BH, n, N, P] and the final state: one baddbmm per chunk."""
    entering = []
    for M_c, D_c in zip(M.unbind(1), D.unbind(1)):
        entering.append(S)
        S = torch.baddbmm(D_c, M_c, S)
    return torch.stack(entering, dim=1), S


def _prepare(q, k, v, beta, log_a, initial_state, C):
    """Chunked inputs (accumulation dtype) and the pairwise-decay path for them."""
    acc = accumulate_dtype(q, k, v, beta, log_a, initial_state)
    n = -(-q.shape[1] // C)
    qc, kc, vc, bc = (_to_chunks(x, acc, C, n) for x in (q, k, v, beta[..., None]))
    gate = gate_per_channel(log_a)
    g = None if gate is None else torch.cumsum(_to_chunks(gate, acc, C, n), dim=-2)
    factorised = g is not None and not torch.compiler.is_compiling() and (
        max_chunk_span(g.detach()) <= MAX_FACTORISED_SPAN)
    return qc, kc, vc, bc, g, factorised


def _forward(q, k, v, beta, log_a, initial_state, scale, C):
    """o [B, T, H, P] (accumulation dtype), the states entering each chunk and the final state;
    differentiable through PyTorch's ops (the path under torch.compile)."""
    B, T, H, N = q.shape
    P = v.shape[-1]
    qc, kc, vc, bc, g, factorised = _prepare(q, k, v, beta, log_a, initial_state, C)
    kk, qk, k_in, q_in, k_out, decay_end = _operands(qc, kc, g, factorised, N)
    _, solved = _solve(kk, k_in, vc, bc)
    W, U0 = solved.split([N, P], dim=-1)
    M, D = _transfer(k_out, solved, decay_end, N)
    if initial_state is None:
        S = torch.zeros(B * H, N, P, dtype=qc.dtype, device=v.device)
    else:
        S = initial_state.to(qc.dtype).reshape(B * H, N, P)
    S_in, S = _entering_states(M, D, S)
    U = U0 - W @ S_in
    o = scale * (q_in @ S_in + qk @ U)  # [BH, n, C, P]
    return _from_chunks(o, B, T, H), S_in, S.reshape(B, H, N, P)


class _DeltaRuleChunked(torch.autograd.Function):
    """The chunked delta rule with a hand-derived backward (for the custom op of op.py).

    Forward saves the inputs and the state entering each chunk ([B*H, n, N, P]). Backward
    recomputes each chunk's scores and UT solve (batched over all chunks) and, with dS the
    gradient of the state leaving a chunk, K = e^{g_C - g} k and M the chunk transfer,

        dS_entering = M^T dS + scale (Q~^T dO - W^T M_qk^T dO)     (one baddbmm per chunk)
        dU = scale M_qk^T dO + K dS,  dM_qk = scale dO U^T,  dQ~ = scale dO S_0^T,  dK = U dS^T
        dR = (I + diag(beta) A)^{-T} [-dU S_0^T | dU],  dA = -diag(beta) dR X^T (strict lower)
        dbeta = rowsum(-dR X^T * A) + rowsum(dR * [K~ | V]),  d[K~ | V] = diag(beta) dR

    then back through the scores and decay factors (:func:`_operand_grads`; for scores
    S = lower(x y^T) decayed by e^{g_t - g_s}, dg = x dx - y dy) to dq, dk and the in-chunk dg,
    whose reverse in-chunk cumsum is d log_a. No autograd inside (it also runs inside the custom
    op of op.py, below autograd).
    """

    @staticmethod
    def forward(ctx, q, k, v, beta, log_a, initial_state, scale, chunk_size):
        o, S_in, final = _forward(q, k, v, beta, log_a, initial_state, scale, chunk_size)
        ctx.save_for_backward(q, k, v, beta, log_a, initial_state, S_in)
        ctx.args = (scale, chunk_size)
        return o.to(v.dtype), final

    @staticmethod
    def backward(ctx, d_o, d_final):
        q, k, v, beta, log_a, initial_state, S_in = ctx.saved_tensors
        scale, C = ctx.args
        B, T, H, N = q.shape
        P = v.shape[-1]
        qc, kc, vc, bc, g, factorised = _prepare(q, k, v, beta, log_a, initial_state, C)
        acc, n = qc.dtype, qc.shape[1]
        kk, qk, k_in, q_in, k_out, decay_end = _operands(qc, kc, g, factorised, N)
        system, X = _solve(kk, k_in, vc, bc)
        W, U0 = X.split([N, P], dim=-1)
        M, _ = _transfer(k_out, X, decay_end, N)
        U = U0 - W @ S_in
        if d_o is None:
            d_o = torch.zeros(B, T, H, P, dtype=acc, device=v.device)
        dOc = _to_chunks(d_o, acc, C, n)
        qk_t_dO = qk.transpose(-1, -2) @ dOc
        direct = scale * (q_in.transpose(-1, -2) @ dOc - W.transpose(-1, -2) @ qk_t_dO)
        dS = (torch.zeros(B * H, N, P, dtype=acc, device=v.device) if d_final is None
              else d_final.to(acc).reshape(B * H, N, P))
        leaving = []
        for c in range(n - 1, -1, -1):
            leaving.append(dS)
            dS = torch.baddbmm(direct[:, c], M[:, c].transpose(-1, -2), dS)
        dS_out = torch.stack(leaving[::-1], dim=1)  # [BH, n, N, P]
        dU = scale * qk_t_dO + k_out @ dS_out
        d_qk = torch.tril(scale * (dOc @ U.transpose(-1, -2)))
        d_q_in = scale * (dOc @ S_in.transpose(-1, -2))
        d_k_out = U @ dS_out.transpose(-1, -2)
        dX = torch.cat([-(dU @ S_in.transpose(-1, -2)), dU], dim=-1)
        dR = torch.linalg.solve_triangular(system.transpose(-1, -2), dX, upper=True,
                                           unitriangular=True)
        dM = -torch.tril(dR @ X.transpose(-1, -2), diagonal=-1)
        d_beta = (dM * kk).sum(-1, keepdim=True) + (dR * torch.cat([k_in, vc], -1)).sum(
            -1, keepdim=True)
        d_decay_end = None if decay_end is None else (dS_out * S_in).sum(-1)
        dq, dk, dg = _operand_grads(qc, kc, g, factorised, bc * dM, d_qk, bc * dR[..., :N],
                                    d_q_in, d_k_out, d_decay_end)
        dq, dk = _from_chunks(dq, B, T, H), _from_chunks(dk, B, T, H)
        dv, d_beta = (_from_chunks(x, B, T, H) for x in (bc * dR[..., N:], d_beta))
        d_log_a = None
        if g is not None:
            dg = dg.flip(-2).cumsum(-2).flip(-2)  # back through the in-chunk cumsum
            d_log_a = _from_chunks(dg, B, T, H)
            if log_a.dim() == 3:
                d_log_a = d_log_a[..., 0]
        d_s0 = None if initial_state is None else dS.reshape(B, H, N, P)
        out = [dq, dk, dv, d_beta[..., 0], d_log_a, d_s0]
        inputs = (q, k, v, beta, log_a, initial_state)
        return (*(None if x is None else gx.to(x.dtype) for gx, x in zip(out, inputs)),
                None, None)


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
    q, k, v, beta, log_a and initial_state through PyTorch's autograd (faster and lighter here
    than the hand-derived backward of :class:`_DeltaRuleChunked`, which recomputes).
    """
    check_delta_rule_inputs(q, k, v, beta, log_a, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1 but got {chunk_size}")
    o, _, final = _forward(q, k, v, beta, log_a, initial_state, scale, chunk_size)
    o = o.to(v.dtype)
    return (o, final) if output_final_state else o
