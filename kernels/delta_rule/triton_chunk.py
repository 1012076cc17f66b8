"""Chunked delta rule in Triton (DeltaNet, Gated DeltaNet, KDA): forward and backward behind a
torch.autograd.Function.

Same algebra as ``chunk.py`` (the UT transform of Yang et al. 2024). Per chunk of Q steps, with
g the in-chunk cumsum of the gate (per key channel; a scalar gate is broadcast over them, no
gate is g = 0), S0 the entering state, K~ = e^g k, Q~ = e^g q, K_end = e^{g_C - g} k:

    A = strictly lower [k_t . (e^{g_t - g_s} k_s)],   M = lower [q_t . (e^{g_t - g_s} k_s)],
    T = (I + diag(beta) A)^{-1},   W = T diag(beta) K~,   U' = T diag(beta) V,
    U = U' - W S0,   o = scale (Q~ S0 + M U),   S_next = diag(e^{g_C}) S0 + K_end^T U.

Kernels: the decayed scores A and M per row sub-block of 16 steps (the secondary chunking of the
GLA kernels, whose stripe helpers are reused: no exponential leaves [0, 1] for decays), the
triangular inverse T by forward substitution in each chunk, the chunk-to-chunk recurrence per
(batch*head, block of value columns) looping over chunks, and the outputs. Backward: the
gradients reaching U and the states (the adjoint recurrence, in reverse), the per-chunk
gradients through T, W, U', beta and the gates, and per sub-block the gradients through the
decayed scores; d log_a is an in-chunk reverse cumsum in PyTorch. Memory: the inputs, W, U, U'
(O(T H (N + P))), A, M, T and their gradients (O(T H Q)) and the chunk states. Runs on CUDA, or
on CPU tensors under TRITON_INTERPRET=1 (tests). Accumulates in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ..gla.triton_chunk import (
    SB,
    _block,
    _col_grad,
    _program,
    _row,
    _row_grad,
    _state_offsets,
    _store_tile,
    _stripe,
    _sub_block,
    _tile,
)
from ..ssd.triton_chunk import _dot
from .validate import DeltaRuleDims, check_delta_rule_inputs, gate_per_channel


@triton.jit
def _cols_tile(ptr, T_pad, H: tl.constexpr, D, b, t0, h, p0, R: tl.constexpr,
               BD: tl.constexpr):
    """Offsets and mask of rows t0 .., columns p0 .. p0+BD-1, head h of [B, T_pad, H, D]."""
    t = t0 + tl.arange(0, R)
    d = p0 + tl.arange(0, BD)
    return ((b * T_pad + t[:, None]) * H + h) * D + d[None, :], (d < D)[None, :]


@triton.jit
def _square(bh, T_pad, t0, R: tl.constexpr, Q: tl.constexpr):
    """Offsets of rows t0 .. t0+R-1 of a per-chunk [Q, Q] matrix stored as [B*H, T_pad, Q]."""
    return (bh * T_pad + t0 + tl.arange(0, R))[:, None] * Q + tl.arange(0, Q)[None, :]


@triton.jit
def _column(bh, T_pad, t0, j, Q: tl.constexpr, SB: tl.constexpr):
    """Offsets of column sub-block j (all Q rows) of the chunk at t0 in [B*H, T_pad, Q]."""
    return (bh * T_pad + t0 + tl.arange(0, Q))[:, None] * Q + j * SB + tl.arange(0, SB)[None, :]


@triton.jit
def _scores_fwd(
    q_ptr, k_ptr, g_ptr, akk_ptr, aqk_ptr, T_pad, N,
    H: tl.constexpr, Q: tl.constexpr, SB: tl.constexpr, BN: tl.constexpr,
):
    """Row sub-block i of A (strict) and M (with its undecayed diagonal q_t . k_t)."""
    _, i, t0, ti, bh, b, h, _ = _sub_block(H, H, Q, SB)
    q_i = _tile(q_ptr, T_pad, H, N, b, ti, h, SB, BN)
    k_i = _tile(k_ptr, T_pad, H, N, b, ti, h, SB, BN)
    g_i = _tile(g_ptr, T_pad, H, N, b, ti, h, SB, BN)
    k = _tile(k_ptr, T_pad, H, N, b, t0, h, Q, BN)
    g = _tile(g_ptr, T_pad, H, N, b, t0, h, Q, BN)
    r_i = _row(g_ptr, T_pad, H, N, b, ti - 1, h, BN, t0)
    offs = _square(bh, T_pad, ti, SB, Q)
    tl.store(akk_ptr + offs, _stripe(k_i, g_i, k, g, k_i, g_i, r_i, i, Q, SB))
    m = _stripe(q_i, g_i, k, g, k_i, g_i, r_i, i, Q, SB)
    rows = i * SB + tl.arange(0, SB)
    diag = tl.sum(q_i * k_i, axis=1)
    tl.store(aqk_ptr + offs, tl.where(tl.arange(0, Q)[None, :] == rows[:, None], diag[:, None], m))


@triton.jit
def _unit_lower_inverse(L, Q: tl.constexpr):
    """(I + L)^{-1} for a strictly lower [Q, Q] L, by forward substitution row by row."""
    rows = tl.arange(0, Q)
    X = tl.where(rows[:, None] == rows[None, :], 1.0, 0.0)
    for i in range(1, Q):
        l_i = tl.sum(tl.where(rows[:, None] == i, L, 0.0), axis=0)  # row i of L (zero for j >= i)
        x_i = tl.where(rows == i, 1.0, 0.0) - tl.sum(l_i[:, None] * X, axis=0)
        X = tl.where(rows[:, None] == i, x_i[None, :], X)
    return X


@triton.jit
def _ut_fwd(
    k_ptr, v_ptr, beta_ptr, g_ptr, akk_ptr, tm_ptr, w_ptr, u0_ptr, T_pad, N, P,
    H: tl.constexpr, Q: tl.constexpr, BN: tl.constexpr, BP: tl.constexpr,
):
    """Per chunk: T = (I + diag(beta) A)^{-1}, W = T diag(beta) K~, U' = T diag(beta) V."""
    c, bh, b, h, _ = _program(H, H)
    t0 = c * Q
    offs = _square(bh, T_pad, t0, Q, Q)
    beta = tl.load(beta_ptr + (b * T_pad + t0 + tl.arange(0, Q)) * H + h).to(tl.float32)
    tm = _unit_lower_inverse(beta[:, None] * tl.load(akk_ptr + offs), Q)
    tl.store(tm_ptr + offs, tm)
    k = _tile(k_ptr, T_pad, H, N, b, t0, h, Q, BN)
    g = _tile(g_ptr, T_pad, H, N, b, t0, h, Q, BN)
    v = _tile(v_ptr, T_pad, H, P, b, t0, h, Q, BP)
    _store_tile(w_ptr, _dot(tm, beta[:, None] * k * tl.exp(g)), T_pad, H, N, b, t0, h, Q, BN)
    _store_tile(u0_ptr, _dot(tm, beta[:, None] * v), T_pad, H, P, b, t0, h, Q, BP)


@triton.jit
def _states_fwd(
    k_ptr, g_ptr, w_ptr, u0_ptr, s0_ptr, u_ptr, s_ptr, final_ptr, T_pad, N, P,
    H: tl.constexpr, Q: tl.constexpr, BN: tl.constexpr, BPB: tl.constexpr,
):
    """For one (batch*head, block of BPB value columns), chunk after chunk: s[c] = S,
    U = U' - W S, S <- diag(e^{g_C}) S + K_end^T U (final: the last S)."""
    bh, p0 = tl.program_id(0).to(tl.int64), tl.program_id(1) * BPB
    b, h = bh // H, bh % H
    n_chunks = T_pad // Q
    n_idx, p_idx = tl.arange(0, BN), p0 + tl.arange(0, BPB)
    s_offs = (bh * N + n_idx[:, None]) * P + p_idx[None, :]
    s_mask = (n_idx < N)[:, None] & (p_idx < P)[None, :]
    state = tl.load(s0_ptr + s_offs, mask=s_mask, other=0.0)
    for c in range(n_chunks):
        t0 = c * Q
        tl.store(s_ptr + (bh * n_chunks + c) * N * P + n_idx[:, None] * P + p_idx[None, :], state,
                 mask=s_mask)
        w = _tile(w_ptr, T_pad, H, N, b, t0, h, Q, BN)
        u_offs, u_mask = _cols_tile(u0_ptr, T_pad, H, P, b, t0, h, p0, Q, BPB)
        u = tl.load(u0_ptr + u_offs, mask=u_mask, other=0.0) - _dot(w, state)
        tl.store(u_ptr + u_offs, u, mask=u_mask)
        k = _tile(k_ptr, T_pad, H, N, b, t0, h, Q, BN)
        g = _tile(g_ptr, T_pad, H, N, b, t0, h, Q, BN)
        end = _row(g_ptr, T_pad, H, N, b, t0 + Q - 1, h, BN, 0)
        state = tl.exp(end)[:, None] * state + _dot(tl.trans(k * tl.exp(end[None, :] - g)), u)
    tl.store(final_ptr + s_offs, state, mask=s_mask)


@triton.jit
def _output_fwd(
    q_ptr, g_ptr, aqk_ptr, u_ptr, s_ptr, o_ptr, scale, T_pad, N, P,
    H: tl.constexpr, Q: tl.constexpr, BN: tl.constexpr, BP: tl.constexpr,
):
    """o = scale (Q~ S0 + M U) for one (chunk, batch*head)."""
    c, bh, b, h, _ = _program(H, H)
    t0 = c * Q
    q = _tile(q_ptr, T_pad, H, N, b, t0, h, Q, BN)
    g = _tile(g_ptr, T_pad, H, N, b, t0, h, Q, BN)
    s_offs, s_mask = _state_offsets(bh, c, T_pad // Q, N, P, BN, BP)
    s_in = tl.load(s_ptr + s_offs, mask=s_mask, other=0.0)
    u = _tile(u_ptr, T_pad, H, P, b, t0, h, Q, BP)
    o = _dot(q * tl.exp(g), s_in) + _dot(tl.load(aqk_ptr + _square(bh, T_pad, t0, Q, Q)), u)
    _store_tile(o_ptr, scale * o, T_pad, H, P, b, t0, h, Q, BP)


@triton.jit
def _local_bwd(
    q_ptr, g_ptr, aqk_ptr, do_ptr, du_ptr, ds_ptr, scale, T_pad, N, P,
    H: tl.constexpr, Q: tl.constexpr, BN: tl.constexpr, BP: tl.constexpr,
):
    """The gradients a chunk's own outputs send to U (scale M^T dO) and to its entering state
    (scale Q~^T dO)."""
    c, bh, b, h, _ = _program(H, H)
    t0 = c * Q
    do = _tile(do_ptr, T_pad, H, P, b, t0, h, Q, BP) * scale
    m = tl.load(aqk_ptr + _square(bh, T_pad, t0, Q, Q))
    _store_tile(du_ptr, _dot(tl.trans(m), do), T_pad, H, P, b, t0, h, Q, BP)
    q = _tile(q_ptr, T_pad, H, N, b, t0, h, Q, BN)
    g = _tile(g_ptr, T_pad, H, N, b, t0, h, Q, BN)
    offs, mask = _state_offsets(bh, c, T_pad // Q, N, P, BN, BP)
    tl.store(ds_ptr + offs, _dot(tl.trans(q * tl.exp(g)), do), mask=mask)


@triton.jit
def _states_bwd(
    k_ptr, g_ptr, w_ptr, du_ptr, dsl_ptr, dfinal_ptr, dexit_ptr, ds0_ptr, T_pad, N, P,
    H: tl.constexpr, Q: tl.constexpr, BN: tl.constexpr, BPB: tl.constexpr,
):
    """The adjoint recurrence, chunk by chunk from the last: dexit[c] = dS (the gradient of the
    state leaving chunk c), dU = dU_local + K_end dS (written over du), dS <- dS_local
    + diag(e^{g_C}) dS - W^T dU (final: d initial_state)."""
    bh, p0 = tl.program_id(0).to(tl.int64), tl.program_id(1) * BPB
    b, h = bh // H, bh % H
    n_chunks = T_pad // Q
    n_idx, p_idx = tl.arange(0, BN), p0 + tl.arange(0, BPB)
    s_offs = (bh * N + n_idx[:, None]) * P + p_idx[None, :]
    s_mask = (n_idx < N)[:, None] & (p_idx < P)[None, :]
    d_state = tl.load(dfinal_ptr + s_offs, mask=s_mask, other=0.0)
    for i in range(n_chunks):
        c = n_chunks - 1 - i
        t0 = c * Q
        c_offs = (bh * n_chunks + c) * N * P + n_idx[:, None] * P + p_idx[None, :]
        tl.store(dexit_ptr + c_offs, d_state, mask=s_mask)
        k = _tile(k_ptr, T_pad, H, N, b, t0, h, Q, BN)
        g = _tile(g_ptr, T_pad, H, N, b, t0, h, Q, BN)
        end = _row(g_ptr, T_pad, H, N, b, t0 + Q - 1, h, BN, 0)
        u_offs, u_mask = _cols_tile(du_ptr, T_pad, H, P, b, t0, h, p0, Q, BPB)
        du = tl.load(du_ptr + u_offs, mask=u_mask, other=0.0) + _dot(
            k * tl.exp(end[None, :] - g), d_state)
        tl.store(du_ptr + u_offs, du, mask=u_mask)
        w = _tile(w_ptr, T_pad, H, N, b, t0, h, Q, BN)
        d_state = (tl.load(dsl_ptr + c_offs, mask=s_mask, other=0.0)
                   + tl.exp(end)[:, None] * d_state - _dot(tl.trans(w), du))
    tl.store(ds0_ptr + s_offs, d_state, mask=s_mask)


@triton.jit
def _chunk_bwd(
    q_ptr, k_ptr, v_ptr, beta_ptr, g_ptr, akk_ptr, tm_ptr, w_ptr, u0_ptr, u_ptr, s_ptr,
    dexit_ptr, du_ptr, do_ptr, dakk_ptr, daqk_ptr, dq_ptr, dk_ptr, dv_ptr, dbeta_ptr, dg_ptr,
    de_ptr, scale, T_pad, N, P,
    H: tl.constexpr, Q: tl.constexpr, BN: tl.constexpr, BP: tl.constexpr,
):
    """Per chunk: the gradients through T, W, U', beta, the decayed queries and keys and the
    chunk's end gate; the gradients of A and M (strict parts) are written for the sub-block
    kernel, M's undecayed diagonal is applied here."""
    c, bh, b, h, _ = _program(H, H)
    t0 = c * Q
    rows = tl.arange(0, Q)
    sq = _square(bh, T_pad, t0, Q, Q)
    q = _tile(q_ptr, T_pad, H, N, b, t0, h, Q, BN)
    k = _tile(k_ptr, T_pad, H, N, b, t0, h, Q, BN)
    v = _tile(v_ptr, T_pad, H, P, b, t0, h, Q, BP)
    g = _tile(g_ptr, T_pad, H, N, b, t0, h, Q, BN)
    end = _row(g_ptr, T_pad, H, N, b, t0 + Q - 1, h, BN, 0)
    beta = tl.load(beta_ptr + (b * T_pad + t0 + rows) * H + h).to(tl.float32)
    w = _tile(w_ptr, T_pad, H, N, b, t0, h, Q, BN)
    u0 = _tile(u0_ptr, T_pad, H, P, b, t0, h, Q, BP)
    u = _tile(u_ptr, T_pad, H, P, b, t0, h, Q, BP)
    du = _tile(du_ptr, T_pad, H, P, b, t0, h, Q, BP)
    do = _tile(do_ptr, T_pad, H, P, b, t0, h, Q, BP) * scale
    s_offs, s_mask = _state_offsets(bh, c, T_pad // Q, N, P, BN, BP)
    s_in = tl.load(s_ptr + s_offs, mask=s_mask, other=0.0)
    d_exit = tl.load(dexit_ptr + s_offs, mask=s_mask, other=0.0)
    tm = tl.load(tm_ptr + sq)

    e_q, e_k = tl.exp(g), tl.exp(end[None, :] - g)
    dq = e_q * _dot(do, tl.trans(s_in))  # through Q~
    d_kend = _dot(u, tl.trans(d_exit))
    dx = _dot(tl.trans(tm), -_dot(du, tl.trans(s_in)))  # d(diag(beta) K~), through W
    dy = _dot(tl.trans(tm), du)  # d(diag(beta) V), through U'
    strict = rows[:, None] > rows[None, :]
    d_l = -tl.where(strict, _dot(dx, tl.trans(w)) + _dot(dy, tl.trans(u0)), 0.0)
    k_tilde = k * e_q
    d_beta = (tl.sum(d_l * tl.load(akk_ptr + sq), axis=1) + tl.sum(dx * k_tilde, axis=1)
              + tl.sum(dy * v, axis=1))
    tl.store(dakk_ptr + sq, beta[:, None] * d_l)
    d_m = _dot(do, tl.trans(u))
    tl.store(daqk_ptr + sq, d_m)
    d_diag = tl.sum(tl.where(rows[:, None] == rows[None, :], d_m, 0.0), axis=1)[:, None]
    dk_tilde = beta[:, None] * dx
    dk = e_q * dk_tilde + e_k * d_kend
    k_end = k * e_k
    dg = q * dq + k_tilde * dk_tilde - k_end * d_kend
    d_end = tl.sum(k_end * d_kend, axis=0) + tl.exp(end) * tl.sum(d_exit * s_in, axis=1)
    d = tl.arange(0, BN)
    tl.store(de_ptr + bh * (T_pad // Q) * N + c * N + d, d_end, mask=d < N)
    _store_tile(dq_ptr, dq + d_diag * k, T_pad, H, N, b, t0, h, Q, BN)
    _store_tile(dk_ptr, dk + d_diag * q, T_pad, H, N, b, t0, h, Q, BN)
    _store_tile(dg_ptr, dg, T_pad, H, N, b, t0, h, Q, BN)
    _store_tile(dv_ptr, beta[:, None] * dy, T_pad, H, P, b, t0, h, Q, BP)
    tl.store(dbeta_ptr + (b * T_pad + t0 + rows) * H + h, d_beta)


@triton.jit
def _scores_bwd(
    q_ptr, k_ptr, g_ptr, dakk_ptr, daqk_ptr, dq_ptr, dk_ptr, dg_ptr, T_pad, N,
    H: tl.constexpr, Q: tl.constexpr, SB: tl.constexpr, BN: tl.constexpr,
):
    """Per sub-block i: the gradients through the decayed scores A (keys both ways) and M, as
    rows (dq_i, dk_i) and as columns (dk_i), added to dq, dk and the gate gradient dg."""
    _, i, t0, ti, bh, b, h, _ = _sub_block(H, H, Q, SB)
    q = _tile(q_ptr, T_pad, H, N, b, t0, h, Q, BN)
    k = _tile(k_ptr, T_pad, H, N, b, t0, h, Q, BN)
    g = _tile(g_ptr, T_pad, H, N, b, t0, h, Q, BN)
    q_i = _tile(q_ptr, T_pad, H, N, b, ti, h, SB, BN)
    k_i = _tile(k_ptr, T_pad, H, N, b, ti, h, SB, BN)
    g_i = _tile(g_ptr, T_pad, H, N, b, ti, h, SB, BN)
    r_i = _row(g_ptr, T_pad, H, N, b, ti - 1, h, BN, t0)
    r_end = _row(g_ptr, T_pad, H, N, b, ti + SB - 1, h, BN, 0)
    rows = _square(bh, T_pad, ti, SB, Q)
    cols = _column(bh, T_pad, t0, i, Q, SB)
    dq_row = _row_grad(tl.load(daqk_ptr + rows), g_i, k, g, k_i, g_i, r_i, i, Q, SB)
    dk_row = _row_grad(tl.load(dakk_ptr + rows), g_i, k, g, k_i, g_i, r_i, i, Q, SB)
    dk_col = (_col_grad(tl.load(daqk_ptr + cols), q, g, q_i, g_i, g_i, r_end, i, Q, SB)
              + _col_grad(tl.load(dakk_ptr + cols), k, g, k_i, g_i, g_i, r_end, i, Q, SB))
    dq = _tile(dq_ptr, T_pad, H, N, b, ti, h, SB, BN) + dq_row
    dk = _tile(dk_ptr, T_pad, H, N, b, ti, h, SB, BN) + dk_row + dk_col
    dg = _tile(dg_ptr, T_pad, H, N, b, ti, h, SB, BN) + q_i * dq_row + k_i * (dk_row - dk_col)
    _store_tile(dq_ptr, dq, T_pad, H, N, b, ti, h, SB, BN)
    _store_tile(dk_ptr, dk, T_pad, H, N, b, ti, h, SB, BN)
    _store_tile(dg_ptr, dg, T_pad, H, N, b, ti, h, SB, BN)


def _value_block(P: int) -> int:
    """Value columns per program of the chunk-to-chunk recurrences (columns are independent)."""
    return min(64, _block(P))


class _DeltaRuleTriton(torch.autograd.Function):
    """Triton chunked delta rule: forward and hand-derived backward (the module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, beta, log_a, initial_state, scale, chunk_size, dims):
        B, T, H, N, P, Q = dims.B, dims.T, dims.H, dims.N, dims.P, chunk_size
        n = -(-T // Q)
        pad = n * Q - T

        def prep(x):
            x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad)) if pad else x
            return x.contiguous()

        qp, kp, vp, bp = prep(q), prep(k), prep(v), prep(beta)
        fp32 = {"dtype": torch.float32, "device": v.device}
        gate = gate_per_channel(log_a)
        if gate is None:
            g = torch.zeros(B, n * Q, H, N, **fp32)
        else:
            g = prep(gate).double().view(B, n, Q, H, -1).cumsum(2).float()
            g = g.expand(B, n, Q, H, N).reshape(B, n * Q, H, N).contiguous()
        s0 = (torch.zeros(B * H, N, P, **fp32) if initial_state is None
              else initial_state.float().reshape(B * H, N, P).contiguous())
        akk = torch.empty(B * H, n * Q, Q, **fp32)
        aqk, tm = torch.empty_like(akk), torch.empty_like(akk)
        w = torch.empty(B, n * Q, H, N, **fp32)
        u0 = torch.empty(B, n * Q, H, P, **fp32)
        u = torch.empty_like(u0)
        states = torch.empty(B * H, n, N, P, **fp32)
        final = torch.empty(B * H, N, P, **fp32)
        o = torch.empty(B, n * Q, H, P, dtype=v.dtype, device=v.device)
        meta = {"H": H, "Q": Q, "BN": _block(N)}
        _scores_fwd[(n * (Q // SB), B * H)](qp, kp, g, akk, aqk, n * Q, N, SB=SB, **meta)
        _ut_fwd[(n, B * H)](kp, vp, bp, g, akk, tm, w, u0, n * Q, N, P, BP=_block(P), **meta)
        bpb = _value_block(P)
        _states_fwd[(B * H, triton.cdiv(P, bpb))](
            kp, g, w, u0, s0, u, states, final, n * Q, N, P, BPB=bpb, **meta)
        _output_fwd[(n, B * H)](qp, g, aqk, u, states, o, scale, n * Q, N, P, BP=_block(P),
                                **meta)
        ctx.save_for_backward(qp, kp, vp, bp, g, akk, aqk, tm, w, u0, u, states)
        ctx.meta = (dims, Q, scale)
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, beta.dtype,
                      None if log_a is None else log_a.dtype,
                      None if initial_state is None else initial_state.dtype)
        return o[:, :T], final.view(B, H, N, P)

    @staticmethod
    def backward(ctx, do, d_final):
        qp, kp, vp, bp, g, akk, aqk, tm, w, u0, u, states = ctx.saved_tensors
        dims, Q, scale = ctx.meta
        B, T, H, N, P = dims.B, dims.T, dims.H, dims.N, dims.P
        n = g.shape[1] // Q
        fp32 = {"dtype": torch.float32, "device": vp.device}
        do = torch.zeros_like(vp) if do is None else F.pad(do, (0, 0, 0, 0, 0, n * Q - T))
        do = do.contiguous()
        d_final = (torch.zeros(B * H, N, P, **fp32) if d_final is None
                   else d_final.float().reshape(B * H, N, P).contiguous())
        meta = {"H": H, "Q": Q, "BN": _block(N)}
        du = torch.empty(B, n * Q, H, P, **fp32)
        d_local = torch.empty_like(states)
        _local_bwd[(n, B * H)](qp, g, aqk, do, du, d_local, scale, n * Q, N, P, BP=_block(P),
                               **meta)
        d_exit, d_s0 = torch.empty_like(states), torch.empty(B * H, N, P, **fp32)
        bpb = _value_block(P)
        _states_bwd[(B * H, triton.cdiv(P, bpb))](
            kp, g, w, du, d_local, d_final, d_exit, d_s0, n * Q, N, P, BPB=bpb, **meta)
        dakk, daqk = torch.empty_like(akk), torch.empty_like(aqk)
        dq = torch.empty(B, n * Q, H, N, **fp32)
        dk, dg = torch.empty_like(dq), torch.empty_like(dq)
        dv = torch.empty(B, n * Q, H, P, **fp32)
        d_beta = torch.empty(B, n * Q, H, **fp32)
        d_end = torch.empty(B * H, n, N, **fp32)
        _chunk_bwd[(n, B * H)](
            qp, kp, vp, bp, g, akk, tm, w, u0, u, states, d_exit, du, do, dakk, daqk,
            dq, dk, dv, d_beta, dg, d_end, scale, n * Q, N, P, BP=_block(P), **meta)
        _scores_bwd[(n * (Q // SB), B * H)](qp, kp, g, dakk, daqk, dq, dk, dg, n * Q, N, SB=SB,
                                            **meta)
        q_dt, k_dt, v_dt, b_dt, a_dt, s_dt = ctx.dtypes
        d_log_a = None
        if a_dt is not None:
            dg = dg.view(B, n, Q, H, N)
            dg[:, :, -1] += d_end.view(B, H, n, N).permute(0, 2, 1, 3)
            d_log_a = dg.flip(2).cumsum(2).flip(2).reshape(B, n * Q, H, N)[:, :T]
            if dims.gate == "scalar":
                d_log_a = d_log_a.sum(-1)
            d_log_a = d_log_a.to(a_dt)
        d_s0 = None if s_dt is None else d_s0.view(B, H, N, P).to(s_dt)
        return (dq[:, :T].to(q_dt), dk[:, :T].to(k_dt), dv[:, :T].to(v_dt),
                d_beta[:, :T].to(b_dt), d_log_a, d_s0, None, None, None)


def delta_rule_chunked_triton(
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
    """Chunked delta rule by Triton kernels; same contract as ``delta_rule_chunked``
    (differentiable in q, k, v, beta, log_a and initial_state).

    chunk_size must be a power of two >= 16 (sub-blocks of 16 steps are tl.dot tiles).
    Accumulates in float32; the final state and d(initial_state) are float32.
    """
    dims: DeltaRuleDims = check_delta_rule_inputs(q, k, v, beta, log_a, initial_state)
    if chunk_size < SB or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size: expected a power of two >= {SB} but got {chunk_size}")
    o, final_state = _DeltaRuleTriton.apply(
        q, k, v, beta, log_a, initial_state, scale, chunk_size, dims)
    return (o, final_state) if output_final_state else o
