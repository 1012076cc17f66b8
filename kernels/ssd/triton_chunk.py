"""Chunked SSD in Triton: forward and backward kernels behind a torch.autograd.Function.

Kernels: chunk state (k^T diag(decay-to-end) v), state passing across chunks (forward and its
adjoint in reverse), chunk output (masked intra-chunk attention + inter-chunk q S), and one fused
backward kernel per chunk. Runs on CUDA, or on CPU tensors under TRITON_INTERPRET=1 (tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .validate import SSDDims, check_ssd_inputs


@triton.jit
def _dot(a, b):
    """float32 matmul of two tiles at full (IEEE) precision: on NVIDIA GPUs Triton's default for
    float32 is TF32 (10-bit mantissa), too coarse for the 1e-5 tolerance of the fp32 path."""
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _offsets(T_pad, X: tl.constexpr, D, b, c, x, Q: tl.constexpr, BLOCK_D: tl.constexpr):
    """Offsets and mask of the [Q, BLOCK_D] tile of chunk c, head/group x in [B, T_pad, X, D]."""
    t = c * Q + tl.arange(0, Q)
    d = tl.arange(0, BLOCK_D)
    offs = ((b * T_pad + t[:, None]) * X + x) * D + d[None, :]
    return offs, (d < D)[None, :] & (t < T_pad)[:, None]


@triton.jit
def _load_tile(ptr, T_pad, X: tl.constexpr, D, b, c, x, Q: tl.constexpr, BLOCK_D: tl.constexpr):
    """The [Q, BLOCK_D] tile of chunk c, slot x of a [B, T_pad, X, D] tensor, in float32
    (zero beyond D)."""
    offs, mask = _offsets(T_pad, X, D, b, c, x, Q, BLOCK_D)
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _program(H: tl.constexpr, G: tl.constexpr):
    """(c, bh, b, h, g) of a program in a (chunk, batch*head) grid; int64, since offsets into
    large tensors pass 2**31."""
    c, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    return c, bh, b, h, h // (H // G)


@triton.jit
def _state_offsets(bh, c, n_chunks, N, P, BN: tl.constexpr, BP: tl.constexpr):
    """Offsets and mask of the [BN, BP] tile of chunk c's state in [B*H, n_chunks, N, P]."""
    n_idx, p_idx = tl.arange(0, BN), tl.arange(0, BP)
    offs = ((bh * n_chunks + c) * N + n_idx[:, None]) * P + p_idx[None, :]
    return offs, (n_idx < N)[:, None] & (p_idx < P)[None, :]


@triton.jit
def _chunk_cumsum(cs_ptr, T_pad, H: tl.constexpr, b, c, h, Q: tl.constexpr):
    """The in-chunk cumsum of log_a over chunk c (cs [Q]) and its last entry (cs_end)."""
    cs = tl.load(cs_ptr + (b * T_pad + c * Q + tl.arange(0, Q)) * H + h)
    cs_end = tl.load(cs_ptr + (b * T_pad + c * Q + Q - 1) * H + h)
    return cs, cs_end


@triton.jit
def _decay(cs, Q: tl.constexpr):
    """The masked decay matrix exp(cs_t - cs_s) for s <= t, 0 above the diagonal."""
    rows = tl.arange(0, Q)
    causal = rows[:, None] >= rows[None, :]
    return tl.exp(tl.where(causal, cs[:, None] - cs[None, :], float("-inf")))


@triton.jit
def _chunk_state_fwd(
    k_ptr, v_ptr, cs_ptr, u_ptr, T_pad, N, P,
    H: tl.constexpr, G: tl.constexpr, Q: tl.constexpr, BN: tl.constexpr, BP: tl.constexpr,
):
    """U_c = sum_s exp(cs_end - cs_s) k_s^T v_s for one (chunk, batch*head)."""
    c, bh, b, h, g = _program(H, G)
    k = _load_tile(k_ptr, T_pad, G, N, b, c, g, Q, BN)
    v = _load_tile(v_ptr, T_pad, H, P, b, c, h, Q, BP)
    cs, cs_end = _chunk_cumsum(cs_ptr, T_pad, H, b, c, h, Q)
    u = _dot(tl.trans(k * tl.exp(cs_end - cs)[:, None]), v)
    u_offs, u_mask = _state_offsets(bh, c, T_pad // Q, N, P, BN, BP)
    tl.store(u_ptr + u_offs, u, mask=u_mask)


@triton.jit
def _state_passing(
    u_ptr, cs_ptr, s0_ptr, out_ptr, final_ptr, T_pad, NP,
    H: tl.constexpr, Q: tl.constexpr, BLOCK: tl.constexpr, REVERSE: tl.constexpr,
):
    """Forward: out[c] = S_c, S_{c+1} = exp(total_c) S_c + U_c (final = S_n).

    REVERSE (the adjoint): out[c] = dS_{c+1}, dS_c = exp(total_c) dS_{c+1} + u[c] (final = dS_0).
    """
    bh, blk = tl.program_id(0).to(tl.int64), tl.program_id(1)
    b, h = bh // H, bh % H
    n_chunks = T_pad // Q
    idx = blk * BLOCK + tl.arange(0, BLOCK)
    mask = idx < NP
    state = tl.load(s0_ptr + bh * NP + idx, mask=mask, other=0.0)
    for i in range(n_chunks):
        c = n_chunks - 1 - i if REVERSE else i
        offs = (bh * n_chunks + c) * NP + idx
        tl.store(out_ptr + offs, state, mask=mask)
        total = tl.load(cs_ptr + (b * T_pad + c * Q + Q - 1) * H + h)
        state = tl.exp(total) * state + tl.load(u_ptr + offs, mask=mask, other=0.0)
    tl.store(final_ptr + bh * NP + idx, state, mask=mask)


@triton.jit
def _chunk_output_fwd(
    q_ptr, k_ptr, v_ptr, cs_ptr, s_ptr, y_ptr, scale, T_pad, N, P,
    H: tl.constexpr, G: tl.constexpr, Q: tl.constexpr, BN: tl.constexpr, BP: tl.constexpr,
):
    """y = scale * ((q k^T o L) v + exp(cs) q S_in) for one (chunk, batch*head)."""
    c, bh, b, h, g = _program(H, G)
    q = _load_tile(q_ptr, T_pad, G, N, b, c, g, Q, BN)
    k = _load_tile(k_ptr, T_pad, G, N, b, c, g, Q, BN)
    v = _load_tile(v_ptr, T_pad, H, P, b, c, h, Q, BP)
    cs, _ = _chunk_cumsum(cs_ptr, T_pad, H, b, c, h, Q)
    s_offs, s_mask = _state_offsets(bh, c, T_pad // Q, N, P, BN, BP)
    s_in = tl.load(s_ptr + s_offs, mask=s_mask, other=0.0)
    attn = _dot(q, tl.trans(k)) * _decay(cs, Q)
    y = _dot(attn, v) + tl.exp(cs)[:, None] * _dot(q, s_in)
    y_offs, y_mask = _offsets(T_pad, H, P, b, c, h, Q, BP)
    tl.store(y_ptr + y_offs, (scale * y).to(y_ptr.dtype.element_ty), mask=y_mask)


@triton.jit
def _chunk_dstate_bwd(
    q_ptr, dy_ptr, cs_ptr, out_ptr, scale, T_pad, N, P,
    H: tl.constexpr, G: tl.constexpr, Q: tl.constexpr, BN: tl.constexpr, BP: tl.constexpr,
):
    """Gradient reaching S_in of a chunk from its own output: (q exp(cs))^T (scale dy)."""
    c, bh, b, h, g = _program(H, G)
    q = _load_tile(q_ptr, T_pad, G, N, b, c, g, Q, BN)
    dy = _load_tile(dy_ptr, T_pad, H, P, b, c, h, Q, BP) * scale
    cs, _ = _chunk_cumsum(cs_ptr, T_pad, H, b, c, h, Q)
    d_state = _dot(tl.trans(q * tl.exp(cs)[:, None]), dy)
    offs, mask = _state_offsets(bh, c, T_pad // Q, N, P, BN, BP)
    tl.store(out_ptr + offs, d_state, mask=mask)


@triton.jit
def _chunk_bwd(
    q_ptr, k_ptr, v_ptr, dy_ptr, cs_ptr, s_ptr, du_ptr,
    dq_ptr, dk_ptr, dv_ptr, dla_ptr, scale, T_pad, N, P,
    H: tl.constexpr, G: tl.constexpr, Q: tl.constexpr, BN: tl.constexpr, BP: tl.constexpr,
):
    """All input gradients of one (chunk, batch*head); dq, dk per head (group sums in torch)."""
    c, bh, b, h, g = _program(H, G)
    q = _load_tile(q_ptr, T_pad, G, N, b, c, g, Q, BN)
    k = _load_tile(k_ptr, T_pad, G, N, b, c, g, Q, BN)
    v = _load_tile(v_ptr, T_pad, H, P, b, c, h, Q, BP)
    dy = _load_tile(dy_ptr, T_pad, H, P, b, c, h, Q, BP) * scale
    cs, cs_end = _chunk_cumsum(cs_ptr, T_pad, H, b, c, h, Q)
    s_offs, s_mask = _state_offsets(bh, c, T_pad // Q, N, P, BN, BP)
    s_in = tl.load(s_ptr + s_offs, mask=s_mask, other=0.0)
    d_u = tl.load(du_ptr + s_offs, mask=s_mask, other=0.0)

    decay = _decay(cs, Q)
    from_start, to_end = tl.exp(cs), tl.exp(cs_end - cs)
    scores = _dot(q, tl.trans(k))
    dv = _dot(tl.trans(scores * decay), dy) + _dot(k * to_end[:, None], d_u)
    d_scores = _dot(dy, tl.trans(v)) * decay
    z = d_scores * scores
    dy_state = _dot(dy, tl.trans(s_in))
    dq = _dot(d_scores, k) + from_start[:, None] * dy_state
    v_d_u = _dot(v, tl.trans(d_u))
    dk = _dot(tl.trans(d_scores), q) + to_end[:, None] * v_d_u
    state_term = to_end * tl.sum(k * v_d_u, axis=1)
    d_cs = tl.sum(z, axis=1) - tl.sum(z, axis=0) - state_term
    d_cs += from_start * tl.sum(q * dy_state, axis=1)
    d_end = tl.sum(state_term, axis=0) + tl.exp(cs_end) * tl.sum(tl.sum(d_u * s_in, axis=1), axis=0)
    rows = tl.arange(0, Q)
    d_cs += tl.where(rows == Q - 1, d_end, 0.0)
    d_log_a = tl.sum(d_cs, axis=0) - tl.cumsum(d_cs, axis=0) + d_cs  # reverse cumsum

    kh_offs, kh_mask = _offsets(T_pad, H, N, b, c, h, Q, BN)
    tl.store(dq_ptr + kh_offs, dq, mask=kh_mask)
    tl.store(dk_ptr + kh_offs, dk, mask=kh_mask)
    v_offs, v_mask = _offsets(T_pad, H, P, b, c, h, Q, BP)
    tl.store(dv_ptr + v_offs, dv.to(dv_ptr.dtype.element_ty), mask=v_mask)
    tl.store(dla_ptr + (b * T_pad + c * Q + rows) * H + h, d_log_a.to(dla_ptr.dtype.element_ty))


def _block(size: int) -> int:
    return max(16, triton.next_power_of_2(size))


class _SSDChunkedTriton(torch.autograd.Function):
    """Triton chunked SSD: forward and hand-derived backward (same algebra as chunk.py)."""

    @staticmethod
    def forward(ctx, q, k, v, log_a, initial_state, scale, chunk_size, dims):
        B, T, G, H, N, P, Q = dims.B, dims.T, dims.G, dims.H, dims.N, dims.P, chunk_size
        n = -(-T // Q)
        pad = n * Q - T

        def prep(x):
            return (F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad)) if pad else x).contiguous()

        qp, kp, vp = prep(q), prep(k), prep(v)
        cs = prep(log_a.float()).view(B, n, Q, H).cumsum(2).view(B, n * Q, H).contiguous()
        fp32 = {"dtype": torch.float32, "device": v.device}
        chunk_state = torch.empty(B, H, n, N, P, **fp32)
        states_in = torch.empty_like(chunk_state)
        final_state = torch.empty(B, H, N, P, **fp32)
        if initial_state is None:
            s0 = torch.zeros(B, H, N, P, **fp32)
        else:
            s0 = initial_state.float().contiguous()
        y = torch.empty(B, n * Q, H, P, dtype=v.dtype, device=v.device)
        grid = (n, B * H)
        meta = {"H": H, "G": G, "Q": Q, "BN": _block(N), "BP": _block(P)}
        _chunk_state_fwd[grid](kp, vp, cs, chunk_state, n * Q, N, P, **meta)
        block = min(1024, triton.next_power_of_2(N * P))
        _state_passing[(B * H, triton.cdiv(N * P, block))](
            chunk_state, cs, s0, states_in, final_state, n * Q, N * P,
            H=H, Q=Q, BLOCK=block, REVERSE=False,
        )
        _chunk_output_fwd[grid](qp, kp, vp, cs, states_in, y, scale, n * Q, N, P, **meta)
        ctx.save_for_backward(qp, kp, vp, cs, states_in)
        ctx.meta = (dims, Q, scale, initial_state is not None)
        ctx.dtypes = (q.dtype, k.dtype, log_a.dtype)
        return y[:, :T], final_state

    @staticmethod
    def backward(ctx, dy, d_final):
        qp, kp, vp, cs, states_in = ctx.saved_tensors
        dims, Q, scale, has_initial = ctx.meta
        B, T, G, H, N, P = dims.B, dims.T, dims.G, dims.H, dims.N, dims.P
        n = cs.shape[1] // Q
        dy = F.pad(dy, (0, 0, 0, 0, 0, n * Q - T)).contiguous()
        fp32 = {"dtype": torch.float32, "device": vp.device}
        d_states_inter = torch.empty_like(states_in)
        d_chunk_state = torch.empty_like(states_in)
        d_initial = torch.empty(B, H, N, P, **fp32)
        d_final = torch.zeros(B, H, N, P, **fp32) if d_final is None else d_final.float()
        grid = (n, B * H)
        meta = {"H": H, "G": G, "Q": Q, "BN": _block(N), "BP": _block(P)}
        _chunk_dstate_bwd[grid](qp, dy, cs, d_states_inter, scale, n * Q, N, P, **meta)
        block = min(1024, triton.next_power_of_2(N * P))
        _state_passing[(B * H, triton.cdiv(N * P, block))](
            d_states_inter, cs, d_final.contiguous(), d_chunk_state, d_initial, n * Q, N * P,
            H=H, Q=Q, BLOCK=block, REVERSE=True,
        )
        dq_heads = torch.empty(B, n * Q, H, N, **fp32)
        dk_heads = torch.empty_like(dq_heads)
        dv = torch.empty_like(vp)
        d_log_a = torch.empty(B, n * Q, H, **fp32)
        _chunk_bwd[grid](
            qp, kp, vp, dy, cs, states_in, d_chunk_state,
            dq_heads, dk_heads, dv, d_log_a, scale, n * Q, N, P, **meta,
        )
        R = H // G
        dq = dq_heads[:, :T].reshape(B, T, G, R, N).sum(3)
        dk = dk_heads[:, :T].reshape(B, T, G, R, N).sum(3)
        q_dt, k_dt, a_dt = ctx.dtypes
        d_s0 = d_initial if has_initial else None
        return dq.to(q_dt), dk.to(k_dt), dv[:, :T], d_log_a[:, :T].to(a_dt), d_s0, None, None, None


def ssd_chunked_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_a: torch.Tensor,
    *,
    scale: float = 1.0,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD by Triton kernels; same contract as ``ssd_chunked``.

    chunk_size must be a power of two >= 16 (a tl.dot tile). Accumulates in float32; the final
    state and d(initial_state) are float32.
    """
    dims: SSDDims = check_ssd_inputs(q, k, v, log_a, initial_state)
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size: expected a power of two >= 16 but got {chunk_size}")
    y, final_state = _SSDChunkedTriton.apply(
        q, k, v, log_a, initial_state, scale, chunk_size, dims
    )
    return (y, final_state) if output_final_state else y
