"""Chunked SSD in PyTorch (any device): batched matmuls over blocks of chunks, own backward.

T is split into chunks of Q steps, and chunks into blocks of c chunks. Blocks run in time order
(reverse order in the backward), all heads at once, so that a block's operands stay in cache.
Per chunk: (1) the intra-chunk output A v with the masked, decayed attention block A;
(2) the chunk's state contribution W = k^T v; (3) the states entering each chunk of the block,
from the state entering the block and the block's W by one small matmul (the scan);
(4) the inter-chunk output q S. Cost O(T Q (N + P) + T N P). Working memory is one block's
buffers; for the backward only the inputs and the state entering each block are kept (the rest
is recomputed per block). docs/kernels.md derives the backward and records the measurements.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .validate import SSDDims, accumulate_dtype, check_ssd_inputs

# Largest in-chunk spread of cumsum(log_a) for which the factorised decay is used: the factors
# exp(cs_t - m), exp(m - cs_s) then stay within exp(+-MAX_FACTORISED_SPAN / 2) (no overflow,
# no subnormals in float32).
MAX_FACTORISED_SPAN = 40.0
# Steps per block: a block's operands (q, k, v, A, y, W, S of c*Q steps, all heads) should fit
# in the CPU's L2/L3 caches; measured at T = 8192, H = 8, N = P = 64 (docs/kernels.md).
BLOCK_STEPS = 512
# Decay weights below exp(FLUSH_BELOW) ~ 2e-35 are set to exactly 0 rather than computed as
# float32 subnormals (which cost ~100x on CPUs, and which strong decay produces in bulk). The
# change is far below float32 resolution next to the weight-1 terms every output has.
FLUSH_BELOW = -80.0


def _pad_time(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad axis 1 (time) at the end; padded steps have k = v = 0 and log_a = 0."""
    if pad == 0:
        return x
    return F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))


def _assign(dest: torch.Tensor, op, *args, **kwargs) -> None:
    """dest = op(*args, **kwargs), written in place by ``out=`` (no temporary). Dynamo cannot
    trace a non-contiguous ``out=``, so under torch.compile it goes through a temporary."""
    if torch.compiler.is_compiling():
        dest.copy_(op(*args, **kwargs))
    else:
        op(*args, **kwargs, out=dest)


def _exp(x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """exp(x) (of a log-space sum) where ``keep``, 0 elsewhere; exponents below FLUSH_BELOW
    give exactly 0 (see there)."""
    drop = x < FLUSH_BELOW
    return x.masked_fill(drop if keep is None else drop | ~keep, float("-inf")).exp_()


class _Layout:
    """Chunks of Q steps grouped in nb blocks of c chunks; a block's buffers are [H, B, c, Q, D].

    Blocks of the caller's [B, T, X, D] tensors (X = G or H) are views [B, c, Q, X, 1, D];
    ``gather`` and ``scatter`` move a block between the two layouts, fused with a per-step
    factor where one is needed. Per-step tensors of the whole call (cs, factors) are
    [H, n, B, Q] with n = nb * c chunks; T is zero-padded to n * Q steps.
    """

    def __init__(self, dims: SSDDims, chunk_size: int) -> None:
        self.dims, self.Q = dims, chunk_size
        chunks = -(-dims.T // chunk_size)
        self.nb = -(-chunks // max(1, BLOCK_STEPS // chunk_size))
        self.c = -(-chunks // self.nb)  # chunks per block, balanced over the blocks
        self.n = self.nb * self.c
        self.rows = dims.H * dims.B * self.c  # matrices per block: the batch of every bmm

    def blocks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[B, T, X, D] -> nb views [B, c, Q, X, 1, D] of the tensor zero-padded to n Q steps
        (the unit axis stands for the heads sharing a group, see ``slots``)."""
        B, T, X, D = x.shape
        x = _pad_time(x, self.n * self.Q - T)
        return x.reshape(B, self.nb, self.c, self.Q, X, 1, D).unbind(1)

    def factor_blocks(self, f: torch.Tensor, groups: int) -> tuple[torch.Tensor, ...]:
        """Per-step factors [H, n, B, Q] -> nb views [B, c, Q, G, R, 1] (H = G R)."""
        d = self.dims
        f = f.view(groups, d.H // groups, self.nb, self.c, d.B, self.Q)
        return f.permute(2, 4, 3, 5, 0, 1)[..., None].unbind(0)

    def buffer(self, D: int, dtype: torch.dtype, device: torch.device, slots: int = 0):
        """A new block buffer [H (or ``slots``) * B * c, Q, D]."""
        d = self.dims
        return torch.empty((slots or d.H) * d.B * self.c, self.Q, D, dtype=dtype, device=device)

    def slots(self, buf: torch.Tensor, groups: int) -> torch.Tensor:
        """View of a [G R B c, Q, D] buffer as [B, c, Q, G, R, D] (the caller's order)."""
        d = self.dims
        R = buf.shape[0] // (groups * d.B * self.c)
        return buf.view(groups, R, d.B, self.c, self.Q, buf.shape[-1]).permute(2, 3, 4, 0, 1, 5)

    @staticmethod
    def gather(dest: torch.Tensor, src: torch.Tensor, factor: torch.Tensor | None) -> None:
        """dest [B, c, Q, G, R, D] = src [B, c, Q, G, 1, D] (times factor [B, c, Q, G, R, 1])."""
        if factor is None:
            dest.copy_(src)
        else:
            _assign(dest, torch.mul, src, factor)

    @staticmethod
    def scatter(
        dest: torch.Tensor,
        src: torch.Tensor,
        factor: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
    ) -> None:
        """dest [B, c, Q, G, 1, D] = sum over R of src [B, c, Q, G, R, D] (times ``factor``),
        plus ``extra`` [B, c, Q, G, 1, D] if given."""
        if src.shape[4] > 1:  # several heads per group: sum them
            _assign(dest, torch.sum, src if factor is None else src * factor, dim=4, keepdim=True)
        elif factor is None:
            dest.copy_(src)
        else:
            _assign(dest, torch.mul, src, factor)
        if extra is not None:
            dest.add_(extra)

    def time_major(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step [H, n, B, Q] -> [B, n*Q, H] (a copy)."""
        H, n, B, Q = x.shape
        return x.permute(2, 1, 3, 0).reshape(B, n * Q, H)


def chunk_cumsum(log_a: torch.Tensor, chunk_size: int, dtype: torch.dtype,
                 chunks: int | None = None) -> torch.Tensor:
    """In-chunk cumulative sums of log_a [B, T, H] -> cs [H, n, B, Q] in ``dtype``.

    cs[h, c, b, t] = sum_{i <= t} log_a[b, c*Q + i, h]; padded steps (beyond T) add 0.
    ``chunks``: pad to this many chunks (default: just enough for T).
    """
    B, T, H = log_a.shape
    n = chunks or -(-T // chunk_size)
    x = _pad_time(log_a.to(dtype), n * chunk_size - T).view(B, n, chunk_size, H)
    return x.permute(3, 1, 0, 2).contiguous().cumsum_(-1)


def max_chunk_span(log_a: torch.Tensor, chunk_size: int) -> float:
    """max over chunks and heads of (max - min) of the in-chunk cumsum of log_a [B, T, H]."""
    return _span(chunk_cumsum(log_a, chunk_size, torch.float32))


def _span(cs: torch.Tensor) -> float:
    """Largest (max - min) over chunks of an in-chunk cumsum [..., Q]."""
    return float((cs.amax(-1) - cs.amin(-1)).max())


class _Factors:
    """Per-step and per-chunk decay factors of one call, all exponentials of log-space sums.

    With reference points r_q, r_k per chunk (constants of the factorisation: the result does
    not depend on them), the inter-chunk query and the state key are
        q^ = scale * q * exp(cs - r_q),   k^ = k * exp(r_k - cs),
    the state entering chunk c is kept as S~_c = exp(r_q,c) S_c, and the chunk's contribution
    W_c = k^_c^T v_c enters the recurrence
        S~_{c+1} = gamma_c S~_c + delta_c W_c,
        log gamma_c = r_q,c+1 - r_q,c + cs_end,c,   log delta_c = r_q,c+1 - r_k,c + cs_end,c,
    with r_q,n = 0, so that the state after the last chunk is the true final state S_n.

    factorised: r_q = r_k = m, the mid-range of the chunk's cumsum, so that exp(cs_t - cs_s) =
    exp(cs_t - m) exp(m - cs_s) and the intra-chunk block is tril(q^ k^^T); delta = gamma.
    exact: r_q = 0, r_k = cs_end (both factors <= 1 for decaying inputs, whatever the decay
    strength), delta = 1; the intra-chunk block uses the masked matrix exp(cs_t - cs_s).
    """

    def __init__(self, cs: torch.Tensor, factorised: bool, scale: float) -> None:
        end = cs[..., -1:]  # [H, n, B, 1]
        if factorised:
            ref_q = ref_k = 0.5 * (cs.amax(-1, keepdim=True) + cs.amin(-1, keepdim=True))
        else:
            ref_q, ref_k = torch.zeros_like(end), end
        next_ref_q = torch.cat([ref_q[:, 1:], torch.zeros_like(ref_q[:, :1])], dim=1)
        self.q = _exp(cs - ref_q).mul_(scale)  # [H, n, B, Q]
        self.k = _exp(ref_k - cs)
        self.log_gamma = (next_ref_q - ref_q + end)[..., 0]  # [H, n, B]
        # (the same tensor when r_q = r_k: code may test `log_delta is log_gamma`)
        self.log_delta = self.log_gamma if factorised else (next_ref_q - ref_k + end)[..., 0]
        self.initial = torch.exp(ref_q[:, 0, :, 0])  # [H, B]: S~_0 = exp(r_q,0) S_0


class _BlockScan:
    """The recurrence S~_{i+1} = gamma_i S~_i + delta_i W_i over the c chunks of each block,
    as one small matmul per block (and its adjoint), from log-space sums of log gamma.

    With L_i = sum_{l<i} log gamma_l (within the block):
        S~_i = exp(L_i) S~_in + sum_{j<i} exp(L_i - L_{j+1} + log delta_j) W_j.
    Adjoint, with G_i = dL/dS~_i and Gn_i = G_{i+1} (Gn_{c-1} = the gradient of the state
    leaving the block):  Gn_i = sum_{j>i} exp(L_j - L_{i+1}) dS_j + exp(L_c - L_{i+1}) Gn_{c-1}
    where dS_j is the gradient reaching S~_j directly, and G_0 = dS_0 + gamma_0 Gn_0.
    In both directions the carried term is folded into one row of the matmul's right operand.
    All per-block tensors are [nb, H*B, ...].
    """

    def __init__(self, fac: _Factors, lay: _Layout, backward: bool = False) -> None:
        d, c = lay.dims, lay.c

        def per_block(x):  # [H, n, B] -> [nb, H*B, c]
            return x.view(d.H, lay.nb, c, d.B).permute(1, 0, 3, 2).reshape(lay.nb, -1, c)

        same = fac.log_delta is fac.log_gamma  # delta = gamma (factorised)
        log_g = per_block(fac.log_gamma)
        log_d = log_g if same else per_block(fac.log_delta)
        lam = torch.cat([torch.zeros_like(log_g[..., :1]), log_g.cumsum(-1)], dim=-1)
        i = torch.arange(c, device=lam.device)
        gamma = _exp(log_g)[..., None]  # [nb, HB, c, 1]
        self.delta = gamma if same else _exp(log_d)[..., None]
        seg = lam[..., :c, None] - lam[..., None, 1:] + log_d[..., None, :]
        into = _exp(seg, i[None, :] < i[:, None])  # [nb, HB, c(i), c(j)]
        # per block (lists: indexing them costs nothing in the loop over blocks)
        self.into = into.unbind(0)
        self.gamma_last, self.delta_last = gamma[:, :, -1].unbind(0), self.delta[:, :, -1].unbind(0)
        # the state entering a block reaches chunk i >= 1 as W_0 does, times gamma_0 / delta_0
        # (None: 1)
        self.carry_into_w0 = None if same else _exp(log_g[..., :1] - log_d[..., :1]).unbind(0)
        if backward:
            seg = lam[..., None, :c] - lam[..., 1:, None]
            back = _exp(seg, i[None, :] > i[:, None])  # exp(L_j - L_{i+1}), j > i
            self.back = back.unbind(0)
            self.gamma_first = gamma[:, :, 0].unbind(0)

    def forward(self, j: int, w: torch.Tensor, carry: torch.Tensor, out: torch.Tensor,
                leaving: torch.Tensor | None = None) -> None:
        """States entering block j's chunks into out [HB, c, NP], and the state leaving the
        block into ``leaving`` [HB, NP] if given.

        w: the block's W [HB, c, NP]; carry: the state entering the block [HB, NP].
        """
        if leaving is not None:  # delta W_{c-1} + gamma S~_{c-1}: W first, it changes below
            torch.mul(w[:, -1], self.delta_last[j], out=leaving)
        # S~_i = exp(L_i) S~_in + ...: exp(L_i) = into[i, 0] gamma_0 / delta_0 for i >= 1, so the
        # entering state is folded into W_0 (one [HB, NP] update instead of all c states)
        if self.carry_into_w0 is None:
            w[:, 0] += carry
        else:
            w[:, 0].addcmul_(carry, self.carry_into_w0[j])
        torch.bmm(self.into[j], w, out=out)
        out[:, 0] = carry
        if leaving is not None:
            leaving.addcmul_(out[:, -1], self.gamma_last[j])

    def backward(self, j: int, d_direct: torch.Tensor, carry: torch.Tensor, out: torch.Tensor):
        """Gn_i = dL/dS~_{i+1} for block j's chunks into out [HB, c, NP]; returns G_0.

        d_direct: gradients reaching each S~_i from its chunk's output [HB, c, NP];
        carry: the gradient of the state leaving the block [HB, NP].
        """
        c = d_direct.shape[1]
        # exp(L_c - L_{i+1}) = back[i, c-1] gamma_{c-1} for i < c-1: fold the carried gradient
        # into dS_{c-1} (one [HB, NP] update instead of all c rows), then Gn_{c-1} = carry
        last = d_direct[:, -1].addcmul_(carry, self.gamma_last[j])
        torch.bmm(self.back[j], d_direct, out=out)
        out[:, -1] = carry
        if c == 1:  # G_0 = dS_0 + gamma_0 carry, already in d_direct
            return last.clone()
        return torch.addcmul(d_direct[:, 0], self.gamma_first[j], out[:, 0])


def _rowdot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sum over the last axis of x * y."""
    return torch.einsum("...d,...d->...", x, y)


class _Blocks:
    """One call's per-block work: block buffers (reused from block to block) and the steps
    shared by the forward and the backward (which recomputes states and A block by block).

    Buffers are [H B c, Q, D] for bmm, with ``slots`` views [B, c, Q, G, R, D] of them for
    gathering and scattering in the caller's layout.
    """

    def __init__(self, q, k, v, cs, factorised, scale, lay: _Layout, backward: bool) -> None:
        d, acc, dev = lay.dims, cs.dtype, v.device
        self.lay = lay
        self.fac = _Factors(cs, factorised, scale)
        self.scan = _BlockScan(self.fac, lay, backward)
        self.intra = _Intra(cs, factorised, scale, lay, q, k)
        self.inputs = list(zip(lay.blocks(q), lay.blocks(k), lay.blocks(v),
                               lay.factor_blocks(self.fac.q, d.G),
                               lay.factor_blocks(self.fac.k, d.G)))
        self.q_hat, self.k_hat, self.v = (lay.buffer(x, acc, dev) for x in (d.N, d.N, d.P))
        self.slots = [lay.slots(x, g) for x, g in
                      ((self.q_hat, d.G), (self.k_hat, d.G), (self.v, d.H))]
        self.w = torch.empty(lay.rows, d.N, d.P, dtype=acc, device=dev)
        self.states = torch.empty(d.H * d.B, lay.c, d.N * d.P, dtype=acc, device=dev)
        self.attn = torch.empty(lay.rows, lay.Q, lay.Q, dtype=acc, device=dev)
        # the same memory as [HB, c, NP] (scan) and [H B c, N, P] (per-chunk matmuls)
        self.w_per_block = self.w.view(self.states.shape)
        self.states_per_chunk = self.states.view(self.w.shape)

    def run(self, j: int, carry: torch.Tensor, leaving: torch.Tensor | None = None) -> None:
        """Load block j (q^, k^, v), its states (from the state entering it, ``carry``) and its
        A; write the state leaving the block into ``leaving`` if given."""
        q_j, k_j, v_j, qf_j, kf_j = self.inputs[j]
        q_s, k_s, v_s = self.slots
        self.lay.gather(q_s, q_j, qf_j)
        self.lay.gather(k_s, k_j, kf_j)
        self.lay.gather(v_s, v_j, None)
        torch.bmm(self.k_hat.mT, self.v, out=self.w)
        self.scan.forward(j, self.w_per_block, carry, self.states, leaving)
        self.intra.attention(j, self.q_hat, self.k_hat, out=self.attn)


class _SSDChunked(torch.autograd.Function):
    """Chunked SSD, forward and hand-derived backward, for both decay paths.

    ``factorised`` selects how the intra-chunk block A is built (see :class:`_Factors`); the
    states, the inter-chunk output and the backward outside A are shared. ``cs`` is the
    in-chunk cumsum of log_a in the layout's chunking (the caller chose the path from it).
    Only the states entering each block are saved; the backward recomputes the rest.
    """

    @staticmethod
    def forward(ctx, q, k, v, log_a, initial_state, cs, factorised, scale, chunk_size, dims):
        lay = _Layout(dims, chunk_size)
        d, acc, dev = dims, cs.dtype, v.device
        HB, NP = d.H * d.B, d.N * d.P
        blk = _Blocks(q, k, v, cs, factorised, scale, lay, backward=False)
        y = torch.empty(d.B, lay.n * lay.Q, d.H, d.P, dtype=v.dtype, device=dev)
        y_b = lay.buffer(d.P, acc, dev)
        carries = torch.empty(lay.nb + 1, d.H, d.B, d.N, d.P, dtype=acc, device=dev)
        if initial_state is None:
            carries[0] = 0
        else:  # S~_0 = exp(r_q,0) S_0
            torch.mul(initial_state.transpose(0, 1), blk.fac.initial[..., None, None],
                      out=carries[0])
        carries = carries.view(lay.nb + 1, HB, NP)
        y_slots = lay.slots(y_b, d.H)
        for j, y_j in enumerate(lay.blocks(y)):
            blk.run(j, carries[j], leaving=carries[j + 1])
            torch.bmm(blk.attn, blk.v, out=y_b).baddbmm_(blk.q_hat, blk.states_per_chunk)
            lay.scatter(y_j, y_slots)

        ctx.save_for_backward(q, k, v, cs, carries)
        ctx.args = (lay, factorised, scale)
        ctx.dtypes = (q.dtype, k.dtype, log_a.dtype)
        ctx.state_dtype = None if initial_state is None else initial_state.dtype
        final = carries[-1].view(d.H, d.B, d.N, d.P).transpose(0, 1)
        return y[:, : d.T], final.clone()

    @staticmethod
    def backward(ctx, dy, d_final):
        q, k, v, cs, carries = ctx.saved_tensors
        lay, factorised, scale = ctx.args
        d, acc, dev = lay.dims, cs.dtype, v.device
        HB, NP, rows, c = d.H * d.B, d.N * d.P, lay.rows, lay.c
        blk = _Blocks(q, k, v, cs, factorised, scale, lay, backward=True)
        scan, fac = blk.scan, blk.fac
        q_hat, k_hat, v_b, attn, s_in = blk.q_hat, blk.k_hat, blk.v, blk.attn, blk.states
        # per-block buffers, reused from block to block
        dy_b, dv_b = lay.buffer(d.P, acc, dev), lay.buffer(d.P, acc, dev)
        dq_hat, dk_hat = lay.buffer(d.N, acc, dev), lay.buffer(d.N, acc, dev)
        d_attn = torch.empty_like(attn)
        d_direct = torch.empty(rows, d.N, d.P, dtype=acc, device=dev)
        g_next = torch.empty(HB, c, NP, dtype=acc, device=dev)
        d_w = torch.empty_like(g_next) if factorised else g_next  # exact: delta = 1
        dy_slots, dv_slots = lay.slots(dy_b, d.H), lay.slots(dv_b, d.H)
        dq_slots, dk_slots = lay.slots(dq_hat, d.G), lay.slots(dk_hat, d.G)
        d_w_per_chunk = d_w.view(rows, d.N, d.P)
        # results
        dq = torch.empty(d.B, lay.n * lay.Q, d.G, d.N, dtype=acc, device=dev)
        dk = torch.empty_like(dq)
        dv = torch.empty(d.B, lay.n * lay.Q, d.H, d.P, dtype=v.dtype, device=dev)
        d_cs = torch.empty(lay.nb, rows, lay.Q, dtype=acc, device=dev)
        d_end = torch.empty(lay.nb, HB, c, dtype=acc, device=dev)
        carry = d_final.to(acc).transpose(0, 1).reshape(HB, NP)

        outputs = list(zip(lay.blocks(dy), lay.blocks(dq), lay.blocks(dk), lay.blocks(dv)))
        for j in reversed(range(lay.nb)):
            dy_j, dq_j, dk_j, dv_j = outputs[j]
            _, _, _, qf_j, kf_j = blk.inputs[j]
            blk.run(j, carries[j])
            lay.gather(dy_slots, dy_j, None)
            # states: gradients reaching S~ directly, then the block's reverse recurrence
            torch.bmm(q_hat.mT, dy_b, out=d_direct)
            carry = scan.backward(j, d_direct.view(HB, c, NP), carry, out=g_next)
            # d cs_end,i through gamma_i and delta_i: <dL/dS~_{i+1}, S~_{i+1}>
            d_end[j, :, :-1] = (g_next[:, :-1] * s_in[:, 1:]).sum(-1)
            d_end[j, :, -1] = (g_next[:, -1] * carries[j + 1]).sum(-1)
            if factorised:
                torch.mul(g_next, scan.delta[j], out=d_w)  # dL/dW_i = delta_i G_{i+1}
            # values, then the inter-chunk and state terms of q^, k^
            torch.bmm(dy_b, v_b.mT, out=d_attn)
            torch.bmm(attn.mT, dy_b, out=dv_b).baddbmm_(k_hat, d_w_per_chunk)
            lay.scatter(dv_j, dv_slots)
            torch.bmm(dy_b, blk.states_per_chunk.mT, out=dq_hat)
            torch.bmm(v_b, d_w_per_chunk.mT, out=dk_hat)
            dq_raw, dk_raw, d_cs_raw = blk.intra.backward(
                j, d_attn, attn, q_hat, k_hat, dq_hat, dk_hat
            )
            torch.sub(_rowdot(q_hat, dq_hat), _rowdot(k_hat, dk_hat), out=d_cs[j])
            if d_cs_raw is not None:
                d_cs[j] += d_cs_raw
            lay.scatter(dq_j, dq_slots, qf_j, dq_raw)
            lay.scatter(dk_j, dk_slots, kf_j, dk_raw)

        d_cs = d_cs.view(lay.nb, d.H, d.B, c, lay.Q)
        d_cs[..., -1] += d_end.view(lay.nb, d.H, d.B, c)
        d_cs = d_cs.permute(1, 0, 3, 2, 4).reshape(d.H, lay.n, d.B, lay.Q)
        d_log_a = lay.time_major(d_cs.flip(-1).cumsum(-1).flip(-1))  # reverse in-chunk cumsum
        q_dt, k_dt, a_dt = ctx.dtypes
        T = d.T
        d_s0 = None
        if ctx.state_dtype is not None:
            d_s0 = carry.view(d.H, d.B, d.N, d.P) * fac.initial[..., None, None]
            d_s0 = d_s0.transpose(0, 1).to(ctx.state_dtype)
        return (dq[:, :T].to(q_dt), dk[:, :T].to(k_dt), dv[:, :T], d_log_a[:, :T].to(a_dt),
                d_s0, None, None, None, None, None)


class _Intra:
    """The intra-chunk block A of each chunk, and its part of the backward.

    factorised: A = tril(q^ k^^T); its gradient flows into q^ and k^ (dq^ += dA k^,
    dk^ += dA^T q^), so the decay gradient comes with theirs. exact: A = L o (q k^T) with the
    masked decay L = scale * exp(cs_t - cs_s) [s <= t], from the raw queries and keys; its
    gradients are returned in raw form (added to dq, dk unscaled) and d cs_t gets
    rowsum_t(Z) - colsum_t(Z) for Z = dA o A.
    """

    def __init__(self, cs, factorised, scale, lay: _Layout, q, k) -> None:
        self.factorised, self.lay = factorised, lay
        if factorised:
            return
        d = lay.dims
        Q, c = lay.Q, lay.c
        i = torch.arange(Q, device=cs.device)
        seg = cs[..., :, None] - cs[..., None, :]  # [H, n, B, Q, Q]
        decay = _exp(seg, i[None, :] <= i[:, None]).mul_(scale)
        decay = decay.view(d.H, lay.nb, c, d.B, Q, Q).permute(1, 0, 3, 2, 4, 5)
        self.decay = decay.reshape(lay.nb, d.G, -1, Q, Q)  # [nb, G, R B c, Q, Q]
        self.q_raw, self.k_raw = (lay.buffer(d.N, cs.dtype, cs.device, slots=d.G) for _ in "qk")
        self.q_blocks, self.k_blocks = lay.blocks(q), lay.blocks(k)
        self.scores = torch.empty(d.G, d.B * c, Q, Q, dtype=cs.dtype, device=cs.device)

    def attention(self, j, q_hat, k_hat, out):
        if self.factorised:
            return torch.bmm(q_hat, k_hat.mT, out=out).tril_()
        lay, d = self.lay, self.lay.dims
        lay.gather(lay.slots(self.q_raw, d.G), self.q_blocks[j], None)
        lay.gather(lay.slots(self.k_raw, d.G), self.k_blocks[j], None)
        torch.bmm(self.q_raw, self.k_raw.mT, out=self.scores.flatten(0, 1))
        dest = out.view(self.decay[j].shape)  # [G, R B c, Q, Q]
        torch.mul(self.scores.repeat(1, d.heads_per_group, 1, 1), self.decay[j], out=dest)
        return out

    def backward(self, j, d_attn, attn, q_hat, k_hat, dq_hat, dk_hat):
        """Adds A's gradient to dq^, dk^ (factorised) or returns it as raw extras
        (dq [B, c, Q, G, 1, N], dk, d cs [H B c, Q]) (exact); (None, None, None) otherwise."""
        if self.factorised:
            d_attn.tril_()
            dq_hat.baddbmm_(d_attn, k_hat)
            dk_hat.baddbmm_(d_attn.mT, q_hat)
            return None, None, None
        lay, d = self.lay, self.lay.dims
        z = d_attn * attn
        d_cs = z.sum(-1) - z.sum(-2)
        decay = self.decay[j]  # [G, R B c, Q, Q]
        d_scores = d_attn.view(decay.shape).mul_(decay)
        d_scores = d_scores.view(d.G, d.heads_per_group, -1, lay.Q, lay.Q).sum(1).flatten(0, 1)
        dq_raw = torch.bmm(d_scores, self.k_raw)
        dk_raw = torch.bmm(d_scores.mT, self.q_raw)
        return lay.slots(dq_raw, d.G), lay.slots(dk_raw, d.G), d_cs


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
    any T (the last chunks are zero-padded). Half-precision inputs accumulate in float32.
    """
    y, final_state = _SSDChunked.apply(
        *chunked_arguments(q, k, v, log_a, initial_state, scale, chunk_size)
    )
    return (y, final_state) if output_final_state else y


def chunked_arguments(q, k, v, log_a, initial_state, scale: float, chunk_size: int) -> tuple:
    """The inputs checked, and the arguments of ``_SSDChunked.forward`` after ctx: the
    in-chunk cumsum of log_a and the decay path (factorised or exact) chosen from it."""
    dims = check_ssd_inputs(q, k, v, log_a, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1 but got {chunk_size}")
    acc = accumulate_dtype(q, k, v, log_a, initial_state)
    cs = chunk_cumsum(log_a.detach(), chunk_size, acc, chunks=_Layout(dims, chunk_size).n)
    # the factorised path is chosen from the data, which a compiled graph cannot branch on:
    # under torch.compile the exact path (valid for any decay) is traced instead (the custom
    # op of op.py runs this eagerly, where the choice is made from the data)
    factorised = not torch.compiler.is_compiling() and _span(cs) <= MAX_FACTORISED_SPAN
    return q, k, v, log_a, initial_state, cs, factorised, scale, chunk_size, dims
