"""Chunked gated linear attention in Triton: forward and backward behind a torch.autograd.Function.

Same algebra as ``chunk.py`` (docs/kernels.md). T is cut into chunks of Q steps and each chunk
into sub-blocks of SB = 16 steps (secondary chunking). With b the in-chunk cumsum of log_alpha
(per key channel) and bq the query's decay (b, or b_{t-1} with RWKV-6's bonus), the intra-chunk
weights A[t, s] = sum_n q_tn k_sn exp(bq_tn - b_sn) (s < t) are computed per row sub-block i as
one matmul over the columns before it, factorised around r = b at the step before the sub-block
(exp(bq_t - r) <= 1 and exp(r - b_s) <= 1), plus the [SB, SB] diagonal block as masked
exponentials of differences (exponents <= 0). No exponential of a cumsum is ever taken
unpaired with a smaller one, so nothing overflows for any decay. The diagonal t = s carries no
decay: scale q_t . k_t (q_t . (u * k_t) with the bonus).

Kernels: chunk state (k diag(exp(e - b)))^T v, per-channel state passing across chunks
(forward, and its adjoint in reverse), outputs per row sub-block; backward: the gradient
reaching each chunk's entering state, then one kernel per row sub-block (dq and the queries'
decay gradient) and one per column sub-block (dk, dv and the keys' decay gradient); the decay
gradients are summed into d log_alpha by an in-chunk reverse cumsum in PyTorch. The decayed
stripe helpers (:func:`_stripe`, :func:`_row_grad`, :func:`_col_stripe`, :func:`_col_grad`)
are shared with the delta rule's Triton kernels. Runs on CUDA, or on CPU tensors under
TRITON_INTERPRET=1 (tests). Accumulates in float32 (half-precision inputs are upcast on load).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ..ssd.triton_chunk import _dot
from .validate import GLADims, check_gla_inputs

SB = 16  # sub-block size of the secondary chunking (a tl.dot tile)


@triton.jit
def _tile(ptr, T_pad, X: tl.constexpr, D, b, t0, x, R: tl.constexpr, BD: tl.constexpr):
    """Rows t0 .. t0+R-1, slot x of a [B, T_pad, X, D] tensor as an [R, BD] float32 tile (zero
    beyond D)."""
    t = t0 + tl.arange(0, R)
    d = tl.arange(0, BD)
    offs = ((b * T_pad + t[:, None]) * X + x) * D + d[None, :]
    return tl.load(ptr + offs, mask=(d < D)[None, :] & (t < T_pad)[:, None], other=0.0).to(
        tl.float32)


@triton.jit
def _store_tile(ptr, val, T_pad, X: tl.constexpr, D, b, t0, x, R: tl.constexpr,
                BD: tl.constexpr):
    """Store an [R, BD] tile at rows t0 .., slot x of a [B, T_pad, X, D] tensor (its dtype)."""
    t = t0 + tl.arange(0, R)
    d = tl.arange(0, BD)
    offs = ((b * T_pad + t[:, None]) * X + x) * D + d[None, :]
    tl.store(ptr + offs, val.to(ptr.dtype.element_ty),
             mask=(d < D)[None, :] & (t < T_pad)[:, None])


@triton.jit
def _row(ptr, T_pad, X: tl.constexpr, D, b, t, x, BD: tl.constexpr, t_min):
    """Row t, slot x of a [B, T_pad, X, D] float32 tensor as a [BD] vector (0 if t < t_min)."""
    d = tl.arange(0, BD)
    mask = (d < D) & (t + 0 * d >= t_min)
    return tl.load(ptr + ((b * T_pad + t) * X + x) * D + d, mask=mask, other=0.0)


@triton.jit
def _state_offsets(bh, c, n_chunks, N, P, BN: tl.constexpr, BP: tl.constexpr):
    """Offsets and mask of the [BN, BP] tile of chunk c's state in [B*H, n_chunks, N, P]."""
    n_idx, p_idx = tl.arange(0, BN), tl.arange(0, BP)
    offs = ((bh * n_chunks + c) * N + n_idx[:, None]) * P + p_idx[None, :]
    return offs, (n_idx < N)[:, None] & (p_idx < P)[None, :]


@triton.jit
def _place(i, Q: tl.constexpr, SB: tl.constexpr):
    """The one-hot [SB, Q] matrix putting column a of an [SB, SB] block at column i*SB + a
    (exact under an IEEE float32 dot)."""
    a, cols = tl.arange(0, SB), tl.arange(0, Q)
    return tl.where(cols[None, :] == i * SB + a[:, None], 1.0, 0.0)


@triton.jit
def _pick(tile, s, SB: tl.constexpr):
    """Row s of an [SB, BN] tile as a [BN] vector."""
    return tl.sum(tl.where((tl.arange(0, SB) == s)[:, None], tile, 0.0), axis=0)


@triton.jit
def _decay_from(gx_i, gy_s, s, SB: tl.constexpr):
    """[SB, BN] exp(gx_t - gy_s) for the rows t > s of a sub-block, 0 for t <= s (exponents
    <= 0 for decays)."""
    later = (tl.arange(0, SB) > s)[:, None]
    return tl.exp(tl.where(later, gx_i - gy_s[None, :], float("-inf")))


@triton.jit
def _diag_scores(x_i, gx_i, y_i, gy_i, SB: tl.constexpr):
    """The strictly lower [SB, SB] block sum_n x_tn y_sn exp(gx_tn - gy_sn) inside one
    sub-block, a column s at a time (so no [SB, SB, BN] tensor is held in registers)."""
    a = tl.arange(0, SB)
    out = tl.zeros([SB, SB], dtype=tl.float32)
    for s in tl.static_range(SB):
        y_s, gy_s = _pick(y_i, s, SB), _pick(gy_i, s, SB)
        col = tl.sum(x_i * y_s[None, :] * _decay_from(gx_i, gy_s, s, SB), axis=1)
        out = tl.where(a[None, :] == s, col[:, None], out)
    return out


@triton.jit
def _diag_row_grad(d_diag, gx_i, y_i, gy_i, SB: tl.constexpr):
    """d x_i [SB, BN] from the gradient d_diag [SB, SB] of :func:`_diag_scores`."""
    a = tl.arange(0, SB)
    dx = tl.zeros_like(gx_i)
    for s in tl.static_range(SB):
        y_s, gy_s = _pick(y_i, s, SB), _pick(gy_i, s, SB)
        d_s = tl.sum(tl.where(a[None, :] == s, d_diag, 0.0), axis=1)
        dx += d_s[:, None] * y_s[None, :] * _decay_from(gx_i, gy_s, s, SB)
    return dx


@triton.jit
def _diag_col_grad(d_diag, x_i, gx_i, gy_i, SB: tl.constexpr):
    """d y_i [SB, BN] from the gradient d_diag [SB, SB] of :func:`_diag_scores`."""
    a = tl.arange(0, SB)
    dy = tl.zeros_like(gx_i)
    for s in tl.static_range(SB):
        gy_s = _pick(gy_i, s, SB)
        d_s = tl.sum(tl.where(a[None, :] == s, d_diag, 0.0), axis=1)
        row = tl.sum(d_s[:, None] * x_i * _decay_from(gx_i, gy_s, s, SB), axis=0)
        dy = tl.where((a == s)[:, None], row[None, :], dy)
    return dy


@triton.jit
def _stripe(x_i, gx_i, y, gy, y_i, gy_i, r_i, i, Q: tl.constexpr, SB: tl.constexpr):
    """Row sub-block i of the strictly lower decayed scores sum_n x_tn y_sn exp(gx_tn - gy_sn),
    an [SB, Q] tile: columns before the sub-block through the reference r_i (gx_t <= r_i <= gy_s
    for decays), the diagonal block exactly. y, gy: the chunk [Q, BN]; x_i, gx_i, y_i, gy_i:
    sub-block i's rows [SB, BN]."""
    before = (tl.arange(0, Q) < i * SB)[:, None]
    yr = y * tl.exp(tl.where(before, r_i[None, :] - gy, float("-inf")))
    off = _dot(x_i * tl.exp(gx_i - r_i[None, :]), tl.trans(yr))
    diag = _diag_scores(x_i, gx_i, y_i, gy_i, SB)
    return off + _dot(diag, _place(i, Q, SB))


@triton.jit
def _row_grad(d_stripe, gx_i, y, gy, y_i, gy_i, r_i, i, Q: tl.constexpr, SB: tl.constexpr):
    """d x_i [SB, BN] from the gradient of :func:`_stripe`'s output, d_stripe [SB, Q] (only its
    strictly lower entries are read)."""
    before = (tl.arange(0, Q) < i * SB)[:, None]
    yr = y * tl.exp(tl.where(before, r_i[None, :] - gy, float("-inf")))
    dx = _dot(d_stripe, yr) * tl.exp(gx_i - r_i[None, :])
    d_diag = _dot(d_stripe, tl.trans(_place(i, Q, SB)))  # [SB, SB]
    return dx + _diag_row_grad(d_diag, gx_i, y_i, gy_i, SB)


@triton.jit
def _col_stripe(x, gx, x_j, gx_j, y_j, gy_j, r_j, j, Q: tl.constexpr, SB: tl.constexpr):
    """Column sub-block j of the same strictly lower scores, a [Q, SB] tile: rows after the
    sub-block through the reference r_j = gy at its last step, the diagonal block exactly."""
    after = (tl.arange(0, Q) >= (j + 1) * SB)[:, None]
    xr = x * tl.exp(tl.where(after, gx - r_j[None, :], float("-inf")))
    off = _dot(xr, tl.trans(y_j * tl.exp(r_j[None, :] - gy_j)))
    diag = _diag_scores(x_j, gx_j, y_j, gy_j, SB)
    return off + _dot(tl.trans(_place(j, Q, SB)), diag)


@triton.jit
def _col_grad(d_col, x, gx, x_j, gx_j, gy_j, r_j, j, Q: tl.constexpr, SB: tl.constexpr):
    """d y_j [SB, BN] from the gradient of :func:`_col_stripe`'s output, d_col [Q, SB] (only
    the strictly lower entries are read)."""
    after = (tl.arange(0, Q) >= (j + 1) * SB)[:, None]
    xr = x * tl.exp(tl.where(after, gx - r_j[None, :], float("-inf")))
    dy = _dot(tl.trans(d_col), xr) * tl.exp(r_j[None, :] - gy_j)
    d_diag = _dot(_place(j, Q, SB), d_col)  # [SB, SB]: rows t, columns s of the block
    return dy + _diag_col_grad(d_diag, x_j, gx_j, gy_j, SB)


@triton.jit
def _program(H: tl.constexpr, G: tl.constexpr):
    """(block, bh, b, h, g) of a program in a (block, batch*head) grid; int64 offsets."""
    blk, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    return blk, bh, b, h, h // (H // G)


@triton.jit
def _chunk_state_fwd(
    k_ptr, v_ptr, b_ptr, u_ptr, T_pad, N, P,
    H: tl.constexpr, G: tl.constexpr, Q: tl.constexpr, BN: tl.constexpr, BP: tl.constexpr,
):
    """U_c = (k * exp(e - b))^T v for one (chunk, batch*head), e = b at the chunk's end."""
    c, bh, b, h, g = _program(H, G)
    k = _tile(k_ptr, T_pad, G, N, b, c * Q, g, Q, BN)
    v = _tile(v_ptr, T_pad, H, P, b, c * Q, h, Q, BP)
    cum = _tile(b_ptr, T_pad, H, N, b, c * Q, h, Q, BN)
    end = _row(b_ptr, T_pad, H, N, b, c * Q + Q - 1, h, BN, 0)
    u = _dot(tl.trans(k * tl.exp(end[None, :] - cum)), v)
    offs, mask = _state_offsets(bh, c, T_pad // Q, N, P, BN, BP)
    tl.store(u_ptr + offs, u, mask=mask)


@triton.jit
def _state_passing(
    u_ptr, b_ptr, s0_ptr, out_ptr, final_ptr, T_pad, N, P,
    H: tl.constexpr, Q: tl.constexpr, BLOCK: tl.constexpr, REVERSE: tl.constexpr,
):
    """Forward: out[c] = S_c, S_{c+1} = diag(exp(e_c)) S_c + U_c (final = S_n).

    REVERSE (the adjoint): out[c] = dS_{c+1}, dS_c = diag(exp(e_c)) dS_{c+1} + u[c]
    (final = dS_0). e_c: the cumsum of log_alpha over chunk c, per key channel.
    """
    bh, blk = tl.program_id(0).to(tl.int64), tl.program_id(1)
    b, h = bh // H, bh % H
    n_chunks = T_pad // Q
    idx = blk * BLOCK + tl.arange(0, BLOCK)
    mask = idx < N * P
    channel = idx // P
    state = tl.load(s0_ptr + bh * N * P + idx, mask=mask, other=0.0)
    for i in range(n_chunks):
        c = n_chunks - 1 - i if REVERSE else i
        offs = (bh * n_chunks + c) * N * P + idx
        tl.store(out_ptr + offs, state, mask=mask)
        total = tl.load(b_ptr + ((b * T_pad + c * Q + Q - 1) * H + h) * N + channel, mask=mask,
                        other=0.0)
        state = tl.exp(total) * state + tl.load(u_ptr + offs, mask=mask, other=0.0)
    tl.store(final_ptr + bh * N * P + idx, state, mask=mask)


@triton.jit
def _sub_block(H: tl.constexpr, G: tl.constexpr, Q: tl.constexpr, SB: tl.constexpr):
    """(c, i, t0, ti, bh, b, h, g) of a program in a (sub-block, batch*head) grid: chunk c,
    sub-block i within it, the chunk's first step t0 and the sub-block's ti."""
    r, bh, b, h, g = _program(H, G)
    c, i = r // (Q // SB), r % (Q // SB)
    return c, i, c * Q, c * Q + i * SB, bh, b, h, g


@triton.jit
def _diagonal(q_i, k_i, u_ptr, h, N, BN: tl.constexpr, BONUS: tl.constexpr):
    """The undecayed diagonal weights q_t . k_t (q_t . (u * k_t) with the bonus), [SB]."""
    w = q_i * k_i
    if BONUS:
        d = tl.arange(0, BN)
        w = w * tl.load(u_ptr + h * N + d, mask=d < N, other=0.0).to(tl.float32)[None, :]
    return tl.sum(w, axis=1)


@triton.jit
def _output_fwd(
    q_ptr, k_ptr, v_ptr, b_ptr, bq_ptr, u_ptr, s_ptr, y_ptr, scale, T_pad, N, P,
    H: tl.constexpr, G: tl.constexpr, Q: tl.constexpr, SB: tl.constexpr, BN: tl.constexpr,
    BP: tl.constexpr, BONUS: tl.constexpr,
):
    """y = scale (A v + (q * exp(bq)) S_in) for one row sub-block of one (chunk, batch*head)."""
    c, i, t0, ti, bh, b, h, g = _sub_block(H, G, Q, SB)
    q_i = _tile(q_ptr, T_pad, G, N, b, ti, g, SB, BN)
    gq_i = _tile(bq_ptr, T_pad, H, N, b, ti, h, SB, BN)
    k = _tile(k_ptr, T_pad, G, N, b, t0, g, Q, BN)
    gk = _tile(b_ptr, T_pad, H, N, b, t0, h, Q, BN)
    k_i = _tile(k_ptr, T_pad, G, N, b, ti, g, SB, BN)
    gk_i = _tile(b_ptr, T_pad, H, N, b, ti, h, SB, BN)
    r_i = _row(b_ptr, T_pad, H, N, b, ti - 1, h, BN, t0)
    attn = _stripe(q_i, gq_i, k, gk, k_i, gk_i, r_i, i, Q, SB)
    rows = i * SB + tl.arange(0, SB)
    diag = _diagonal(q_i, k_i, u_ptr, h, N, BN, BONUS)
    attn = tl.where(tl.arange(0, Q)[None, :] == rows[:, None], diag[:, None], attn)
    s_offs, s_mask = _state_offsets(bh, c, T_pad // Q, N, P, BN, BP)
    s_in = tl.load(s_ptr + s_offs, mask=s_mask, other=0.0)
    v = _tile(v_ptr, T_pad, H, P, b, t0, h, Q, BP)
    y = _dot(attn, v) + _dot(q_i * tl.exp(gq_i), s_in)
    _store_tile(y_ptr, scale * y, T_pad, H, P, b, ti, h, SB, BP)


@triton.jit
def _dstate_bwd(
    q_ptr, dy_ptr, bq_ptr, out_ptr, scale, T_pad, N, P,
    H: tl.constexpr, G: tl.constexpr, Q: tl.constexpr, BN: tl.constexpr, BP: tl.constexpr,
):
    """Gradient reaching a chunk's entering state from its own outputs: (q exp(bq))^T scale dy."""
    c, bh, b, h, g = _program(H, G)
    q = _tile(q_ptr, T_pad, G, N, b, c * Q, g, Q, BN)
    gq = _tile(bq_ptr, T_pad, H, N, b, c * Q, h, Q, BN)
    dy = _tile(dy_ptr, T_pad, H, P, b, c * Q, h, Q, BP) * scale
    offs, mask = _state_offsets(bh, c, T_pad // Q, N, P, BN, BP)
    tl.store(out_ptr + offs, _dot(tl.trans(q * tl.exp(gq)), dy), mask=mask)


@triton.jit
def _rows_bwd(
    q_ptr, k_ptr, v_ptr, b_ptr, bq_ptr, u_ptr, s_ptr, dy_ptr, dq_ptr, dgq_ptr, du_ptr,
    scale, T_pad, N, P,
    H: tl.constexpr, G: tl.constexpr, Q: tl.constexpr, SB: tl.constexpr, BN: tl.constexpr,
    BP: tl.constexpr, BONUS: tl.constexpr,
):
    """Per row sub-block: dq (per head), the gradient of the queries' decay bq (decayed terms
    only: q * dq), and with the bonus this sub-block's part of d u."""
    c, i, t0, ti, bh, b, h, g = _sub_block(H, G, Q, SB)
    q_i = _tile(q_ptr, T_pad, G, N, b, ti, g, SB, BN)
    gq_i = _tile(bq_ptr, T_pad, H, N, b, ti, h, SB, BN)
    k = _tile(k_ptr, T_pad, G, N, b, t0, g, Q, BN)
    gk = _tile(b_ptr, T_pad, H, N, b, t0, h, Q, BN)
    k_i = _tile(k_ptr, T_pad, G, N, b, ti, g, SB, BN)
    gk_i = _tile(b_ptr, T_pad, H, N, b, ti, h, SB, BN)
    r_i = _row(b_ptr, T_pad, H, N, b, ti - 1, h, BN, t0)
    v = _tile(v_ptr, T_pad, H, P, b, t0, h, Q, BP)
    v_i = _tile(v_ptr, T_pad, H, P, b, ti, h, SB, BP)
    dy_i = _tile(dy_ptr, T_pad, H, P, b, ti, h, SB, BP) * scale
    s_offs, s_mask = _state_offsets(bh, c, T_pad // Q, N, P, BN, BP)
    s_in = tl.load(s_ptr + s_offs, mask=s_mask, other=0.0)
    dq = _row_grad(_dot(dy_i, tl.trans(v)), gq_i, k, gk, k_i, gk_i, r_i, i, Q, SB)
    dq += tl.exp(gq_i) * _dot(dy_i, tl.trans(s_in))
    _store_tile(dgq_ptr, q_i * dq, T_pad, H, N, b, ti, h, SB, BN)
    d_diag = tl.sum(dy_i * v_i, axis=1)[:, None]
    d = tl.arange(0, BN)
    if BONUS:
        u = tl.load(u_ptr + h * N + d, mask=d < N, other=0.0).to(tl.float32)
        dq += d_diag * k_i * u[None, :]
        du = tl.sum(d_diag * q_i * k_i, axis=0)
        n_sub = T_pad // SB
        tl.store(du_ptr + (bh * n_sub + c * (Q // SB) + i) * N + d, du, mask=d < N)
    else:
        dq += d_diag * k_i
    _store_tile(dq_ptr, dq, T_pad, H, N, b, ti, h, SB, BN)


@triton.jit
def _cols_bwd(
    q_ptr, k_ptr, v_ptr, b_ptr, bq_ptr, u_ptr, ds_ptr, dy_ptr, dk_ptr, dv_ptr, dgk_ptr, de_ptr,
    scale, T_pad, N, P,
    H: tl.constexpr, G: tl.constexpr, Q: tl.constexpr, SB: tl.constexpr, BN: tl.constexpr,
    BP: tl.constexpr, BONUS: tl.constexpr,
):
    """Per column sub-block j: dk (per head), dv, the gradient of the keys' decay b (decayed
    terms: -k * dk) and this sub-block's part of the gradient of the chunk's end e (through
    the state it writes). ds_ptr: the gradient of the state leaving each chunk."""
    c, j, t0, tj, bh, b, h, g = _sub_block(H, G, Q, SB)
    q = _tile(q_ptr, T_pad, G, N, b, t0, g, Q, BN)
    gq = _tile(bq_ptr, T_pad, H, N, b, t0, h, Q, BN)
    q_j = _tile(q_ptr, T_pad, G, N, b, tj, g, SB, BN)
    gq_j = _tile(bq_ptr, T_pad, H, N, b, tj, h, SB, BN)
    k_j = _tile(k_ptr, T_pad, G, N, b, tj, g, SB, BN)
    gk_j = _tile(b_ptr, T_pad, H, N, b, tj, h, SB, BN)
    r_j = _row(b_ptr, T_pad, H, N, b, tj + SB - 1, h, BN, 0)
    end = _row(b_ptr, T_pad, H, N, b, t0 + Q - 1, h, BN, 0)
    v_j = _tile(v_ptr, T_pad, H, P, b, tj, h, SB, BP)
    dy = _tile(dy_ptr, T_pad, H, P, b, t0, h, Q, BP) * scale
    dy_j = _tile(dy_ptr, T_pad, H, P, b, tj, h, SB, BP) * scale
    s_offs, s_mask = _state_offsets(bh, c, T_pad // Q, N, P, BN, BP)
    d_out = tl.load(ds_ptr + s_offs, mask=s_mask, other=0.0)

    attn = _col_stripe(q, gq, q_j, gq_j, k_j, gk_j, r_j, j, Q, SB)
    dk = _col_grad(_dot(dy, tl.trans(v_j)), q, gq, q_j, gq_j, gk_j, r_j, j, Q, SB)
    to_end = tl.exp(end[None, :] - gk_j)
    dk_state = to_end * _dot(v_j, tl.trans(d_out))
    _store_tile(dgk_ptr, -k_j * (dk + dk_state), T_pad, H, N, b, tj, h, SB, BN)
    d = tl.arange(0, BN)
    n_sub = T_pad // SB
    tl.store(de_ptr + (bh * n_sub + c * (Q // SB) + j) * N + d, tl.sum(k_j * dk_state, axis=0),
             mask=d < N)
    diag = _diagonal(q_j, k_j, u_ptr, h, N, BN, BONUS)
    dv = _dot(tl.trans(attn), dy) + diag[:, None] * dy_j + _dot(k_j * to_end, d_out)
    d_diag = tl.sum(dy_j * v_j, axis=1)[:, None]
    if BONUS:
        u = tl.load(u_ptr + h * N + d, mask=d < N, other=0.0).to(tl.float32)
        dk += d_diag * q_j * u[None, :]
    else:
        dk += d_diag * q_j
    _store_tile(dk_ptr, dk + dk_state, T_pad, H, N, b, tj, h, SB, BN)
    _store_tile(dv_ptr, dv, T_pad, H, P, b, tj, h, SB, BP)


def _block(size: int) -> int:
    return max(16, triton.next_power_of_2(size))


def chunk_cumsums(log_alpha: torch.Tensor, Q: int, bonus: bool) -> tuple[torch.Tensor, ...]:
    """The in-chunk cumsum b of log_alpha [B, T_pad, H, N] (in float64, rounded once to float32)
    and the query's decay bq (b, or b shifted one step within each chunk with the bonus)."""
    B, T_pad, H, N = log_alpha.shape
    b = log_alpha.double().view(B, T_pad // Q, Q, H, N).cumsum(2)
    bq = F.pad(b[:, :, :-1], (0, 0, 0, 0, 1, 0)) if bonus else b
    return (b.float().view(B, T_pad, H, N).contiguous(),
            bq.float().reshape(B, T_pad, H, N).contiguous())


def state_passing(u, b, s0, Q, reverse):
    """(per-chunk entering states (or leaving-state gradients with ``reverse``), final)."""
    BH, n, N, P = u.shape
    out = torch.empty_like(u)
    final = torch.empty(BH, N, P, dtype=torch.float32, device=u.device)
    block = min(1024, triton.next_power_of_2(N * P))
    _state_passing[(BH, triton.cdiv(N * P, block))](
        u, b, s0, out, final, n * Q, N, P, H=b.shape[2], Q=Q, BLOCK=block, REVERSE=reverse)
    return out, final


class _GLAChunkedTriton(torch.autograd.Function):
    """Triton chunked GLA: forward and hand-derived backward (the algebra of chunk.py)."""

    @staticmethod
    def forward(ctx, q, k, v, log_alpha, initial_state, bonus, scale, chunk_size, dims):
        B, T, G, H, N, P, Q = dims.B, dims.T, dims.G, dims.H, dims.N, dims.P, chunk_size
        n = -(-T // Q)
        pad = n * Q - T

        def prep(x):
            return (F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x).contiguous()

        qp, kp, vp = prep(q), prep(k), prep(v)
        b, bq = chunk_cumsums(prep(log_alpha), Q, bonus is not None)
        fp32 = {"dtype": torch.float32, "device": v.device}
        s0 = (torch.zeros(B * H, N, P, **fp32) if initial_state is None
              else initial_state.float().reshape(B * H, N, P).contiguous())
        u = torch.empty(B * H, n, N, P, **fp32)
        meta = {"H": H, "G": G, "Q": Q, "BN": _block(N), "BP": _block(P)}
        _chunk_state_fwd[(n, B * H)](kp, vp, b, u, n * Q, N, P, **meta)
        states_in, final_state = state_passing(u, b, s0, Q, reverse=False)
        bonus_c = bonus.contiguous() if bonus is not None else b
        y = torch.empty(B, n * Q, H, P, dtype=v.dtype, device=v.device)
        _output_fwd[(n * (Q // SB), B * H)](
            qp, kp, vp, b, bq, bonus_c, states_in, y, scale, n * Q, N, P, SB=SB,
            BONUS=bonus is not None, **meta)
        ctx.save_for_backward(qp, kp, vp, b, bq, bonus, states_in)
        ctx.meta = (dims, Q, scale, initial_state is not None)
        ctx.dtypes = (q.dtype, k.dtype, log_alpha.dtype,
                      None if initial_state is None else initial_state.dtype)
        return y[:, :T], final_state.view(B, H, N, P)

    @staticmethod
    def backward(ctx, dy, d_final):
        qp, kp, vp, b, bq, bonus, states_in = ctx.saved_tensors
        dims, Q, scale, has_initial = ctx.meta
        B, T, G, H, N, P = dims.B, dims.T, dims.G, dims.H, dims.N, dims.P
        n = b.shape[1] // Q
        fp32 = {"dtype": torch.float32, "device": vp.device}
        dy = torch.zeros_like(vp) if dy is None else F.pad(dy, (0, 0, 0, 0, 0, n * Q - T))
        dy = dy.contiguous()
        d_final = (torch.zeros(B * H, N, P, **fp32) if d_final is None
                   else d_final.float().reshape(B * H, N, P).contiguous())
        meta = {"H": H, "G": G, "Q": Q, "BN": _block(N), "BP": _block(P)}
        local = torch.empty_like(states_in)
        _dstate_bwd[(n, B * H)](qp, dy, bq, local, scale, n * Q, N, P, **meta)
        d_out, d_initial = state_passing(local, b, d_final, Q, reverse=True)

        has_bonus = bonus is not None
        bonus_c = bonus.contiguous() if has_bonus else b
        grid = (n * (Q // SB), B * H)
        dq = torch.empty(B, n * Q, H, N, **fp32)
        dgq, dk, dgk = torch.empty_like(dq), torch.empty_like(dq), torch.empty_like(dq)
        dv = torch.empty_like(vp)
        du = torch.zeros(B * H, n * Q // SB, N, **fp32)
        de = torch.empty(B * H, n * Q // SB, N, **fp32)
        sub = {"SB": SB, "BONUS": has_bonus, **meta}
        _rows_bwd[grid](qp, kp, vp, b, bq, bonus_c, states_in, dy, dq, dgq, du, scale,
                        n * Q, N, P, **sub)
        _cols_bwd[grid](qp, kp, vp, b, bq, bonus_c, d_out, dy, dk, dv, dgk, de, scale,
                        n * Q, N, P, **sub)

        # d b: the keys' part, the queries' (bq = b, or b one step earlier with the bonus;
        # bq = 0 at a chunk's first step), and the chunk's end e = b at its last step
        d_b = dgk.view(B, n, Q, H, N)
        dgq = dgq.view(B, n, Q, H, N)
        if has_bonus:
            d_b[:, :, :-1] += dgq[:, :, 1:]
        else:
            d_b += dgq
        d_end = de.view(B, H, n, Q // SB, N).sum(3) + torch.exp(
            b.view(B, n, Q, H, N)[:, :, -1].permute(0, 2, 1, 3)) * (
            d_out * states_in).sum(-1).view(B, H, n, N)
        d_b[:, :, -1] += d_end.permute(0, 2, 1, 3)
        d_log_alpha = d_b.flip(2).cumsum(2).flip(2).reshape(B, n * Q, H, N)[:, :T]

        R = H // G
        q_dt, k_dt, a_dt, s_dt = ctx.dtypes
        dq = dq[:, :T].reshape(B, T, G, R, N).sum(3).to(q_dt)
        dk = dk[:, :T].reshape(B, T, G, R, N).sum(3).to(k_dt)
        d_s0 = d_initial.view(B, H, N, P).to(s_dt) if has_initial else None
        d_bonus = (du.view(B, H, -1, N).sum((0, 2)).to(bonus.dtype) if has_bonus else None)
        return (dq, dk, dv[:, :T], d_log_alpha.to(a_dt), d_s0, d_bonus, None, None, None)


def gla_chunked_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_alpha: torch.Tensor,
    *,
    scale: float = 1.0,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    bonus: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunked GLA by Triton kernels; same contract as ``gla_chunked`` (differentiable in q, k,
    v, log_alpha, initial_state and bonus).

    chunk_size must be a power of two >= 16 (sub-blocks of 16 steps are tl.dot tiles).
    Accumulates in float32; the final state and d(initial_state) are float32.
    """
    dims: GLADims = check_gla_inputs(q, k, v, log_alpha, initial_state, bonus)
    if chunk_size < SB or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size: expected a power of two >= {SB} but got {chunk_size}")
    y, final_state = _GLAChunkedTriton.apply(
        q, k, v, log_alpha, initial_state, bonus, scale, chunk_size, dims)
    return (y, final_state) if output_final_state else y
