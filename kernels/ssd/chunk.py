"""Chunked SSD in PyTorch (any device): batched matmuls over chunks, hand-written backward.

Split T into chunks of Q steps: (1) intra-chunk output by the masked quadratic form, (2) each
chunk's state, (3) a scan of states across chunks with the chunk's total decay, (4) the
inter-chunk output q_t exp(cumsum_t) S_in. Cost O(T Q (N + P) + T N P); memory O(T Q).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .validate import SSDDims, accumulate_dtype, check_ssd_inputs


def _pad_time(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad axis 1 (time) at the end; padded steps have k = v = 0 and log_a = 0."""
    if pad == 0:
        return x
    return F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))


def _reverse_cumsum(x: torch.Tensor) -> torch.Tensor:
    """out_i = sum_{t >= i} x_t along the last axis."""
    return x.flip(-1).cumsum(-1).flip(-1)


class _ChunkLayout:
    """Views of [B, T, G|H, D] tensors as per-head [B*n, Q, D] chunk batches, without copies.

    Working head by head keeps every matmul on a strided view of the caller's tensor, so no
    [B, H, T, D] transposed copy is ever made (those copies cost as much as the matmuls on CPU).
    """

    def __init__(self, dims: SSDDims, chunk_size: int) -> None:
        self.dims = dims
        self.Q = chunk_size
        self.n = -(-dims.T // chunk_size)
        self.pad = self.n * chunk_size - dims.T

    def prepare(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return _pad_time(x.to(dtype), self.pad)

    def head(self, x: torch.Tensor, h: int) -> torch.Tensor:
        """[B, Tpad, X, D] -> [B*n, Q, D] view of head/group h; [B, Tpad, X] -> [B*n, Q]."""
        return x[:, :, h].reshape(self.dims.B * self.n, self.Q, *x.shape[3:])

    def state_view(self, x: torch.Tensor, h: int) -> torch.Tensor:
        """[H, B, n, N, P] buffer -> [B*n, N, P] contiguous view of head h."""
        return x[h].view(self.dims.B * self.n, self.dims.N, self.dims.P)


def _state_passing(
    chunk_state: torch.Tensor, chunk_decay: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan S_{c+1} = exp(total_c) S_c + U_c over chunks (axis 2 of [H, B, n, N, P]).

    Returns (S_c entering each chunk, final S_n).
    """
    states_in = torch.empty_like(chunk_state)
    for c in range(chunk_state.shape[2]):
        states_in[:, :, c] = state
        state = torch.addcmul(chunk_state[:, :, c], chunk_decay[:, :, c, None, None], state)
    return states_in, state


def _reverse_state_passing(
    d_states_inter: torch.Tensor, chunk_decay: torch.Tensor, d_state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjoint of :func:`_state_passing`: returns (dL/dU_c = dL/dS_{c+1}, dL/dS_0)."""
    d_chunk_state = torch.empty_like(d_states_inter)
    for c in reversed(range(d_states_inter.shape[2])):
        d_chunk_state[:, :, c] = d_state
        d_state = torch.addcmul(d_states_inter[:, :, c], chunk_decay[:, :, c, None, None], d_state)
    return d_chunk_state, d_state


def _decay_matrix(cs: torch.Tensor, upper: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """exp(cs_t - cs_s) for s <= t, 0 above the diagonal, written into ``out`` [B*n, Q, Q]."""
    torch.sub(cs[:, :, None], cs[:, None, :], out=out)
    return out.masked_fill_(upper, float("-inf")).exp_()


class _SSDChunkedExact(torch.autograd.Function):
    """Chunked SSD with the exact masked decay exp(cs_t - cs_s); hand-derived backward.

    Used when some chunk's cumsum spread is too large to factorise (strong decay).
    Derivation of the backward in docs/kernels.md.
    """

    @staticmethod
    def forward(ctx, q, k, v, log_a, initial_state, scale, chunk_size, dims):
        acc = accumulate_dtype(q, k, v, log_a, initial_state)
        lay = _ChunkLayout(dims, chunk_size)
        B, H, N, P, n, Q = dims.B, dims.H, dims.N, dims.P, lay.n, lay.Q
        R = dims.heads_per_group
        qp, kp, vp, ap = (lay.prepare(x, acc) for x in (q, k, v, log_a))
        Bn = B * n
        upper = torch.ones(Q, Q, dtype=torch.bool, device=v.device).triu(1)

        cs = torch.empty(H, Bn, Q, dtype=acc, device=v.device)  # in-chunk cumsum of log_a
        scores = torch.empty(dims.G, Bn, Q, Q, dtype=acc, device=v.device)  # q_t . k_s
        decay = torch.empty(H, Bn, Q, Q, dtype=acc, device=v.device)
        chunk_state = torch.empty(H, B, n, N, P, dtype=acc, device=v.device)
        y_intra = []
        for h in range(H):
            g = h // R
            qg, kg, vh = lay.head(qp, g), lay.head(kp, g), lay.head(vp, h)
            if h % R == 0:
                torch.bmm(qg, kg.transpose(1, 2), out=scores[g])
            torch.cumsum(lay.head(ap, h), dim=-1, out=cs[h])
            _decay_matrix(cs[h], upper, decay[h])
            y_intra.append(torch.bmm(decay[h] * scores[g], vh))
            to_end = torch.exp(cs[h, :, -1:] - cs[h])
            u = lay.state_view(chunk_state, h)
            torch.bmm(kg.transpose(1, 2), vh * to_end[..., None], out=u)

        if initial_state is None:
            s0 = chunk_state.new_zeros(H, B, N, P)
        else:
            s0 = initial_state.to(acc).transpose(0, 1)
        chunk_decay = torch.exp(cs[:, :, -1]).view(H, B, n)
        states_in, final_state = _state_passing(chunk_state, chunk_decay, s0)

        y = torch.empty(B, n * Q, H, P, dtype=v.dtype, device=v.device)
        for h in range(H):
            q_from_start = lay.head(qp, h // R) * torch.exp(cs[h])[..., None]
            y_h = torch.baddbmm(y_intra[h], q_from_start, lay.state_view(states_in, h))
            y[:, :, h] = y_h.view(B, n * Q, P).mul_(scale)

        ctx.save_for_backward(qp, kp, vp, cs, decay, scores, states_in, chunk_decay)
        ctx.layout, ctx.scale = lay, scale
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, log_a.dtype)
        ctx.state_dtype = None if initial_state is None else initial_state.dtype
        return y[:, : dims.T], final_state.transpose(0, 1)

    @staticmethod
    def backward(ctx, dy, d_final):
        qp, kp, vp, cs, decay, scores, states_in, chunk_decay = ctx.saved_tensors
        lay, scale = ctx.layout, ctx.scale
        dims = lay.dims
        B, G, H, N, P, n, Q = dims.B, dims.G, dims.H, dims.N, dims.P, lay.n, lay.Q
        R = dims.heads_per_group
        acc = vp.dtype
        dyp = lay.prepare(dy, acc)
        from_start = torch.exp(cs)  # [H, B*n, Q]
        to_end = torch.exp(cs[:, :, -1:] - cs)

        # Gradient reaching each chunk's incoming state from its own inter-chunk output.
        d_states_inter = torch.empty_like(states_in)
        dyc = []
        for h in range(H):
            dyc.append(lay.head(dyp, h) * scale)
            q_from_start = lay.head(qp, h // R) * from_start[h, :, :, None]
            torch.bmm(
                q_from_start.transpose(1, 2), dyc[h], out=lay.state_view(d_states_inter, h)
            )
        if d_final is None:
            d_state = states_in.new_zeros(H, B, N, P)
        else:
            d_state = d_final.to(acc).transpose(0, 1)
        d_chunk_state, d_initial = _reverse_state_passing(d_states_inter, chunk_decay, d_state)
        d_total = chunk_decay * (d_chunk_state * states_in).sum((-1, -2))  # [H, B, n]
        d_total = d_total.view(H, B * n)

        dq = torch.empty(B, n * Q, G, N, dtype=acc, device=vp.device)
        dk = torch.empty_like(dq)
        dv = torch.empty(B, n * Q, H, P, dtype=ctx.dtypes[2], device=vp.device)
        d_log_a = torch.empty(B, n * Q, H, dtype=ctx.dtypes[3], device=vp.device)
        for g in range(G):
            qg, kg = lay.head(qp, g), lay.head(kp, g)
            dq_g = torch.zeros(B * n, Q, N, dtype=acc, device=vp.device)
            dk_g = torch.zeros_like(dq_g)
            d_scores = torch.zeros(B * n, Q, Q, dtype=acc, device=vp.device)
            for h in range(g * R, (g + 1) * R):
                vh, d_u = lay.head(vp, h), lay.state_view(d_chunk_state, h)
                attn = decay[h] * scores[g]
                dv_h = torch.bmm(attn.transpose(1, 2), dyc[h])
                dv_h.baddbmm_(kg * to_end[h, :, :, None], d_u)
                dv[:, :, h] = dv_h.view(B, n * Q, P)
                d_scores_h = torch.bmm(dyc[h], vh.transpose(1, 2)).mul_(decay[h])
                z = d_scores_h * scores[g]  # dL/d(log-decay) of each (t, s) pair
                d_scores += d_scores_h
                dy_state = torch.bmm(dyc[h], lay.state_view(states_in, h).transpose(1, 2))
                dq_g.addcmul_(dy_state, from_start[h, :, :, None])
                v_d_state = torch.bmm(vh, d_u.transpose(1, 2))
                dk_g.addcmul_(v_d_state, to_end[h, :, :, None])
                state_term = to_end[h] * (kg * v_d_state).sum(-1)
                d_cs = z.sum(-1) - z.sum(-2) - state_term
                d_cs.addcmul_(from_start[h], (qg * dy_state).sum(-1))
                d_cs[:, -1] += state_term.sum(-1) + d_total[h]
                d_log_a[:, :, h] = _reverse_cumsum(d_cs).view(B, n * Q)
            dq_g.baddbmm_(d_scores, kg)
            dk_g.baddbmm_(d_scores.transpose(1, 2), qg)
            dq[:, :, g] = dq_g.view(B, n * Q, N)
            dk[:, :, g] = dk_g.view(B, n * Q, N)

        q_dt, k_dt, _, _ = ctx.dtypes
        T = dims.T
        d_s0 = None if ctx.state_dtype is None else d_initial.transpose(0, 1).to(ctx.state_dtype)
        return (
            dq[:, :T].to(q_dt),
            dk[:, :T].to(k_dt),
            dv[:, :T],
            d_log_a[:, :T],
            d_s0,
            None,
            None,
            None,
        )


# Largest in-chunk spread of cumsum(log_a) for which the factorised decay is used: the factors
# exp(cs_t - m), exp(m - cs_s) then stay within exp(+-MAX_FACTORISED_SPAN / 2) (no overflow,
# no subnormals in float32).
MAX_FACTORISED_SPAN = 40.0


def max_chunk_span(log_a: torch.Tensor, chunk_size: int) -> float:
    """max over chunks and heads of (max - min) of the in-chunk cumsum of log_a [B, T, H]."""
    B, T, H = log_a.shape
    n = -(-T // chunk_size)
    x = _pad_time(log_a.to(torch.float32), n * chunk_size - T).view(B, n, chunk_size, H)
    cs = torch.cumsum(x, dim=2)
    return float((cs.amax(2) - cs.amin(2)).max())


class _SSDChunkedFactorised(torch.autograd.Function):
    """Chunked SSD with the decay factorised per chunk: exp(cs_t - cs_s) = e^(cs_t-m) e^(m-cs_s).

    The intra-chunk block is then tril(q~ k~^T) with q~ = q e^(cs-m), k~ = k e^(m-cs): one
    matmul and O(Q) exponentials per chunk instead of Q^2. Only valid when every chunk's
    cumsum spread is <= MAX_FACTORISED_SPAN (checked by the caller); m is the mid-range of the
    chunk's cumsum, a constant of the factorisation (the result does not depend on it).
    """

    @staticmethod
    def forward(ctx, q, k, v, log_a, initial_state, scale, chunk_size, dims):
        acc = accumulate_dtype(q, k, v, log_a, initial_state)
        lay = _ChunkLayout(dims, chunk_size)
        B, H, N, P, n, Q = dims.B, dims.H, dims.N, dims.P, lay.n, lay.Q
        R = dims.heads_per_group
        qp, kp, vp, ap = (lay.prepare(x, acc) for x in (q, k, v, log_a))
        Bn = B * n

        cs = torch.empty(H, Bn, Q, dtype=acc, device=v.device)
        for h in range(H):
            torch.cumsum(lay.head(ap, h), dim=-1, out=cs[h])
        mid = 0.5 * (cs.amax(-1, keepdim=True) + cs.amin(-1, keepdim=True))  # [H, Bn, 1]
        q_factor, k_factor = torch.exp(cs - mid), torch.exp(mid - cs)  # [H, Bn, Q]
        end_factor = torch.exp(cs[:, :, -1:] - mid)  # e^(cs_end - m): k~ -> chunk state
        mid_factor = torch.exp(mid)  # e^m: q~ -> inter-chunk output

        chunk_state = torch.empty(H, B, n, N, P, dtype=acc, device=v.device)
        # Without gradients one cache-resident [B*n, Q, Q] block is reused across heads.
        saving = any(ctx.needs_input_grad)
        attn = torch.empty(H if saving else 1, Bn, Q, Q, dtype=acc, device=v.device)
        y_intra = []
        for h in range(H):
            g = h // R
            q_t = lay.head(qp, g) * q_factor[h, :, :, None]
            k_t = lay.head(kp, g) * k_factor[h, :, :, None]
            vh = lay.head(vp, h)
            attn_h = attn[h if saving else 0]
            torch.bmm(q_t, k_t.transpose(1, 2), out=attn_h).tril_()
            y_intra.append(torch.bmm(attn_h, vh))
            u = lay.state_view(chunk_state, h)
            torch.bmm(k_t.transpose(1, 2), vh, out=u).mul_(end_factor[h, :, :, None])

        if initial_state is None:
            s0 = chunk_state.new_zeros(H, B, N, P)
        else:
            s0 = initial_state.to(acc).transpose(0, 1)
        chunk_decay = torch.exp(cs[:, :, -1]).view(H, B, n)
        states_in, final_state = _state_passing(chunk_state, chunk_decay, s0)

        y = torch.empty(B, n * Q, H, P, dtype=v.dtype, device=v.device)
        for h in range(H):
            q_from_start = lay.head(qp, h // R) * (q_factor[h] * mid_factor[h])[..., None]
            y_h = torch.baddbmm(y_intra[h], q_from_start, lay.state_view(states_in, h))
            y[:, :, h] = y_h.view(B, n * Q, P).mul_(scale)

        ctx.save_for_backward(qp, kp, vp, cs, mid, attn, states_in, chunk_state)
        ctx.layout, ctx.scale = lay, scale
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, log_a.dtype)
        ctx.state_dtype = None if initial_state is None else initial_state.dtype
        return y[:, : dims.T], final_state.transpose(0, 1)

    @staticmethod
    def backward(ctx, dy, d_final):
        qp, kp, vp, cs, mid, attn, states_in, chunk_state = ctx.saved_tensors
        lay, scale = ctx.layout, ctx.scale
        dims = lay.dims
        B, G, H, N, P, n, Q = dims.B, dims.G, dims.H, dims.N, dims.P, lay.n, lay.Q
        R = dims.heads_per_group
        acc = vp.dtype
        dyp = lay.prepare(dy, acc)
        q_factor, k_factor = torch.exp(cs - mid), torch.exp(mid - cs)
        end_factor, mid_factor = torch.exp(cs[:, :, -1:] - mid), torch.exp(mid)
        chunk_decay = torch.exp(cs[:, :, -1]).view(H, B, n)

        d_states_inter = torch.empty_like(states_in)
        dyc, q_ts, k_ts = [], [], []
        for h in range(H):
            dyc.append(lay.head(dyp, h) * scale)
            q_ts.append(lay.head(qp, h // R) * q_factor[h, :, :, None])
            k_ts.append(lay.head(kp, h // R) * k_factor[h, :, :, None])
            d_s = lay.state_view(d_states_inter, h)
            torch.bmm(q_ts[h].transpose(1, 2), dyc[h], out=d_s).mul_(mid_factor[h, :, :, None])
        if d_final is None:
            d_state = states_in.new_zeros(H, B, N, P)
        else:
            d_state = d_final.to(acc).transpose(0, 1)
        d_chunk_state, d_initial = _reverse_state_passing(d_states_inter, chunk_decay, d_state)
        # d cs_end: through the chunk decay and the chunk state's e^(cs_end - m) factor,
        # together <dS_{c+1}, S_{c+1}>.
        d_end = ((chunk_state + chunk_decay[..., None, None] * states_in) * d_chunk_state).sum(
            (-1, -2)
        ).view(H, B * n)

        dq = torch.empty(B, n * Q, G, N, dtype=acc, device=vp.device)
        dk = torch.empty_like(dq)
        dv = torch.empty(B, n * Q, H, P, dtype=ctx.dtypes[2], device=vp.device)
        d_log_a = torch.empty(B, n * Q, H, dtype=ctx.dtypes[3], device=vp.device)
        for g in range(G):
            dq_g, dk_g = None, None
            for h in range(g * R, (g + 1) * R):
                vh = lay.head(vp, h)
                d_u = lay.state_view(d_chunk_state, h) * end_factor[h, :, :, None]
                s_in = lay.state_view(states_in, h) * mid_factor[h, :, :, None]
                dv_h = torch.bmm(attn[h].transpose(1, 2), dyc[h]).baddbmm_(k_ts[h], d_u)
                dv[:, :, h] = dv_h.view(B, n * Q, P)
                d_attn = torch.bmm(dyc[h], vh.transpose(1, 2)).tril_()
                dq_t = torch.bmm(d_attn, k_ts[h]).baddbmm_(dyc[h], s_in.transpose(1, 2))
                dk_t = torch.bmm(d_attn.transpose(1, 2), q_ts[h]).baddbmm_(vh, d_u.transpose(1, 2))
                d_cs = (q_ts[h] * dq_t).sum(-1) - (k_ts[h] * dk_t).sum(-1)
                d_cs[:, -1] += d_end[h]
                d_log_a[:, :, h] = _reverse_cumsum(d_cs).view(B, n * Q)
                dq_h = dq_t.mul_(q_factor[h, :, :, None])
                dk_h = dk_t.mul_(k_factor[h, :, :, None])
                dq_g = dq_h if dq_g is None else dq_g.add_(dq_h)
                dk_g = dk_h if dk_g is None else dk_g.add_(dk_h)
            dq[:, :, g] = dq_g.view(B, n * Q, N)
            dk[:, :, g] = dk_g.view(B, n * Q, N)

        q_dt, k_dt, _, _ = ctx.dtypes
        T = dims.T
        d_s0 = None if ctx.state_dtype is None else d_initial.transpose(0, 1).to(ctx.state_dtype)
        return (
            dq[:, :T].to(q_dt),
            dk[:, :T].to(k_dt),
            dv[:, :T],
            d_log_a[:, :T],
            d_s0,
            None,
            None,
            None,
        )


def ssd_chunked(
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
    """Chunked SSD (PyTorch, differentiable in q, k, v, log_a and initial_state).

    Same shapes and return convention as :func:`~anatomy.kernels.ssd.naive.ssd_naive`;
    any T (the last chunk is zero-padded). Half-precision inputs accumulate in float32.
    """
    dims = check_ssd_inputs(q, k, v, log_a, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1 but got {chunk_size}")
    function = _SSDChunkedExact
    # the factorised path is chosen from the data, which a compiled graph cannot branch on:
    # under torch.compile the exact path (valid for any decay) is traced instead
    if not torch.compiler.is_compiling() and \
            max_chunk_span(log_a.detach(), chunk_size) <= MAX_FACTORISED_SPAN:
        function = _SSDChunkedFactorised
    y, final_state = function.apply(q, k, v, log_a, initial_state, scale, chunk_size, dims)
    return (y, final_state) if output_final_state else y
