"""Chunked gated linear attention in PyTorch (any device): per-channel decays, own backward.

T is split into chunks of Q steps (``chunk_size``), every chunk of every (batch, head) at once.
With the in-chunk cumsum b_t = sum_{i<=t} log_alpha_i (a vector over the key channels), the
query's decay bq_t (b_t, or b_{t-1} with RWKV-6's bonus) and the chunk's end e = b_{Q-1}:

- inter-chunk: y_t += scale (q_t * exp(bq_t)) S, with S the state entering the chunk, and
  S' = diag(exp(e)) S + sum_s (k_s * exp(e - b_s)) v_s^T (a loop over chunks, one op each);
  every exponent is <= 0 for decays;
- intra-chunk: A[t, s] = scale sum_n q_tn k_sn exp(bq_tn - b_sn) (s <= t, or s < t with the
  bonus), y += A v. Factoring exp(bq_t - b_s) = exp(bq_t) exp(-b_s) over the whole chunk would
  overflow (per-channel decays cannot be pulled out of the q.k product as one scalar), so the
  chunk is cut into sub-blocks of c steps (secondary chunking, as in the GLA paper and
  flash-linear-attention), each with its own reference point m_i per channel, the mid-range of
  bq over the sub-block:
      rows of sub-block i:  A_i = (scale q * exp(bq - m_i)) (k * exp(m_i - b))^T,
  over the columns s up to the end of sub-block i. For s before the sub-block m_i <= b_s, so
  both factors are <= 1; inside it both lie within exp(+-span/2), where span is the spread of
  bq over the sub-block. c is the largest of 16, 8, 4, 2, 1 dividing Q for which every span is
  <= MAX_SUB_SPAN (checked on the data; c = 1 always qualifies: its span is 0), so no factor
  leaves exp(+-MAX_SUB_SPAN / 2) and the products are exact to float32 rounding.

Exponents below FLUSH_BELOW give exactly 0 (weights < e^-40 beside the weight-1 terms), never
float32 subnormals (~100x slower on CPUs). Memory: the inputs and outputs in chunk layout,
A [T, Q] per head, the sub-block keys [Q / c, T, N] per head, and the states entering each
chunk (saved for the backward, which recomputes everything else): O(T H (N + P + Q + N Q / c)
+ T H N P / Q), never T x T. docs/kernels.md derives the backward.

Decays are assumed: log_alpha <= 0 (growing steps are computed, but their factors are not
bounded and can overflow).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .validate import GLADims, accumulate_dtype, check_gla_inputs

# Largest spread of the query decay bq over a sub-block: the factors of the intra-chunk products
# then stay within exp(+-MAX_SUB_SPAN / 2) (no overflow, no subnormals in float32).
MAX_SUB_SPAN = 80.0
SUB_BLOCK_SIZES = (16, 8, 4, 2, 1)
# exp of an exponent below this is set to exactly 0 instead of a float32 subnormal.
FLUSH_BELOW = -80.0


def _exp(x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """exp(x) where ``keep`` (all if None), 0 elsewhere; exponents below FLUSH_BELOW give 0."""
    drop = x < FLUSH_BELOW
    return x.masked_fill(drop if keep is None else drop | ~keep, float("-inf")).exp_()


def to_chunks(x: torch.Tensor, n: int, Q: int, dtype: torch.dtype, heads: int) -> torch.Tensor:
    """[B, T, X, D] -> [n, B, H, Q, D] in ``dtype`` (a copy), zero-padded to n Q steps; X = G
    groups are repeated to H heads (head h reads group h // (H // G))."""
    B, T, X, D = x.shape
    x = F.pad(x, (0, 0, 0, 0, 0, n * Q - T)).view(B, n, Q, X, 1, D)
    x = x.expand(B, n, Q, X, heads // X, D).permute(1, 0, 3, 4, 2, 5)
    return x.to(dtype).reshape(n, B, heads, Q, D)


def from_chunks(x: torch.Tensor, T: int, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """[n, B, H, Q, D] -> [B, T, G, D] in ``dtype``, summing the H // G heads of each group."""
    n, B, H, Q, D = x.shape
    x = x.view(n, B, groups, H // groups, Q, D).sum(3).permute(1, 0, 3, 2, 4)
    return x.reshape(B, n * Q, groups, D)[:, :T].to(dtype)


def sub_block_size(bq: torch.Tensor) -> int:
    """The largest sub-block size c in SUB_BLOCK_SIZES dividing Q whose sub-blocks all have a
    spread of bq [..., Q, N] (over their steps, per channel) <= MAX_SUB_SPAN."""
    Q = bq.shape[-2]
    for c in SUB_BLOCK_SIZES:
        if Q % c or c > Q:
            continue
        blocks = bq.unflatten(-2, (Q // c, c))
        if c == 1 or float((blocks.amax(-2) - blocks.amin(-2)).max()) <= MAX_SUB_SPAN:
            return c
    return 1


class _Decays:
    """The decay factors of one call (chunk layout [n, B, H, Q, ...]), all exponentials of
    differences of in-chunk cumsums.

    b: in-chunk cumsum of log_alpha; bq: the query's decay (b, or b shifted by one step with
    the bonus); e = b at the chunk's end. q_inter = exp(bq), k_state = exp(e - b) (<= 1),
    gamma = exp(e) (the state's decay over the chunk). Sub-blocks of c steps: ref [.., m, N]
    the mid-range of bq over each; q_sub = exp(bq - ref) [.., Q, N] (each step its sub-block's
    ref); k_sub = exp(ref_i - b_s) [.., m, Q, N] for the columns s that sub-block i's rows read
    (up to its last step, one fewer with the bonus), 0 elsewhere.
    """

    def __init__(self, log_alpha: torch.Tensor, bonus: bool, c: int | None = None) -> None:
        Q, acc = log_alpha.shape[-2], log_alpha.dtype
        # Cumsums and their differences in float64, each exponent rounded to ``acc`` once: a
        # float32 cumsum of strong decays (hundreds within a chunk) would carry absolute errors
        # of ~eps |b| into every weight exp(bq_t - b_s), even those with small exponents.
        b = log_alpha.double().cumsum(-2)
        bq = F.pad(b[..., :-1, :], (0, 0, 1, 0)) if bonus else b  # bonus: b_{t-1}, b_{-1} = 0
        e = b[..., -1:, :]
        self.c = c = c or sub_block_size(bq)
        m = Q // c
        blocks = bq.unflatten(-2, (m, c))
        ref = 0.5 * (blocks.amax(-2) + blocks.amin(-2))  # [.., m, N]
        self.q_sub = _exp((bq - ref.repeat_interleave(c, dim=-2)).to(acc))
        s = torch.arange(Q, device=log_alpha.device)
        last = torch.arange(1, m + 1, device=log_alpha.device) * c - (2 if bonus else 1)
        keep = (s[None, :] <= last[:, None])[:, :, None]  # [m, Q, 1]
        self.k_sub = _exp((ref[..., :, None, :] - b[..., None, :, :]).to(acc), keep)
        self.q_inter = _exp(bq.to(acc))
        self.k_state = _exp((e - b).to(acc))
        self.gamma = _exp(e[..., 0, :].to(acc))  # [n, B, H, N]


def _intra_mask(Q: int, bonus: bool, device: torch.device) -> torch.Tensor:
    """Where A is kept: s <= t, or s < t with the bonus (whose diagonal is set apart)."""
    return torch.ones(Q, Q, dtype=torch.bool, device=device).tril(-1 if bonus else 0)


def _intra(qs: torch.Tensor, ks: torch.Tensor, c: int) -> torch.Tensor:
    """A [.., Q, Q] from the sub-block queries qs [.., Q, N] and keys ks [.., m, Q, N]: the rows
    of sub-block i are qs_i ks_i^T (unmasked)."""
    m = ks.shape[-3]
    rows = torch.matmul(qs.unflatten(-2, (m, c)), ks.mT)  # [.., m, c, Q]
    return rows.flatten(-3, -2)


class _GLAChunked(torch.autograd.Function):
    """Chunked GLA, forward and hand-derived backward. The forward saves the inputs and the
    state entering every chunk; the backward recomputes the decays, A and the chunk factors.

    Arguments after the tensors are plain constants: ``scale``, ``chunk_size``, ``dims``.
    """

    @staticmethod
    def forward(ctx, q, k, v, log_alpha, initial_state, bonus, scale, chunk_size, dims: GLADims):
        acc = accumulate_dtype(q, k, v, log_alpha, initial_state, bonus)
        d, Q = dims, chunk_size
        n = -(-d.T // Q)
        qc, kc = (to_chunks(x, n, Q, acc, d.H) for x in (q, k))
        vc = to_chunks(v, n, Q, acc, d.H)
        dec = _Decays(to_chunks(log_alpha, n, Q, acc, d.H), bonus is not None)
        # intra-chunk
        attn = _intra(scale * qc * dec.q_sub, kc[..., None, :, :] * dec.k_sub, dec.c)
        attn.masked_fill_(~_intra_mask(Q, bonus is not None, v.device), 0.0)
        if bonus is not None:
            u = bonus.to(acc)[:, None, :]  # [H, 1, N]
            attn.diagonal(dim1=-2, dim2=-1).copy_(scale * (qc * u * kc).sum(-1))
        y = torch.matmul(attn, vc)
        # states entering each chunk (chunk-major: one contiguous [B, H, N, P] per chunk)
        w = torch.matmul((kc * dec.k_state).mT, vc)  # [n, B, H, N, P]
        states = torch.empty(n + 1, d.B, d.H, d.N, d.P, dtype=acc, device=v.device)
        if initial_state is None:
            states[0] = 0
        else:
            states[0] = initial_state.to(acc)
        gamma = dec.gamma[..., None]
        for i in range(n):
            torch.addcmul(w[i], gamma[i], states[i], out=states[i + 1])
        y += torch.matmul(scale * qc * dec.q_inter, states[:-1])
        ctx.save_for_backward(q, k, v, log_alpha, initial_state, bonus, states)
        ctx.args = (scale, Q, d, dec.c)
        out = y.permute(1, 0, 3, 2, 4).reshape(d.B, n * Q, d.H, d.P)[:, : d.T]
        return out.to(v.dtype), states[-1].clone()

    @staticmethod
    def backward(ctx, dy, d_final):
        q, k, v, log_alpha, initial_state, bonus, states = ctx.saved_tensors
        scale, Q, d, c = ctx.args
        acc = states.dtype
        n = states.shape[0] - 1
        qc, kc = (to_chunks(x, n, Q, acc, d.H) for x in (q, k))
        vc = to_chunks(v, n, Q, acc, d.H)
        if dy is None:
            dy = torch.zeros_like(v)
        dyc = to_chunks(dy, n, Q, acc, d.H)
        dec = _Decays(to_chunks(log_alpha, n, Q, acc, d.H), bonus is not None, c)
        # intra-chunk: recompute A, then A's gradient into q, k (via the sub-block factors)
        qs = scale * qc * dec.q_sub
        ks = kc[..., None, :, :] * dec.k_sub  # [.., m, Q, N]
        attn = _intra(qs, ks, c).masked_fill_(~_intra_mask(Q, bonus is not None, v.device), 0.0)
        d_attn = torch.matmul(dyc, vc.mT)  # [.., Q, Q]
        if bonus is not None:
            u = bonus.to(acc)[:, None, :]
            attn.diagonal(dim1=-2, dim2=-1).copy_(scale * (qc * u * kc).sum(-1))
        dv = torch.matmul(attn.mT, dyc)
        # Weights that carry no decay: the diagonal A[t, t] = scale q_t . (u *) k_t, and with the
        # bonus the first subdiagonal A[t, t-1] = scale q_t . k_{t-1} (bq_t = b_{t-1}). Their
        # gradients go to q, k (and u) directly. Through the sub-block factors they would add
        # equal and opposite terms to d bq and d b, whose rounding (~eps of the largest weights)
        # the in-chunk reverse cumsum below would accumulate into d log_alpha.
        d_diag = scale * d_attn.diagonal(dim1=-2, dim2=-1)[..., None]  # [.., Q, 1]
        if bonus is not None:
            d_sub = scale * d_attn.diagonal(-1, dim1=-2, dim2=-1)[..., None]  # [.., Q-1, 1]
        undecayed = 1 if bonus is None else 2
        d_attn.masked_fill_(~torch.ones(Q, Q, dtype=torch.bool, device=v.device).tril(-undecayed),
                            0.0)
        m = ks.shape[-3]
        d_rows = d_attn.unflatten(-2, (m, c))  # [.., m, c, Q]
        d_qs = torch.matmul(d_rows, ks).flatten(-3, -2)  # [.., Q, N]
        d_ks = torch.matmul(d_rows.mT, qs.unflatten(-2, (m, c)))  # [.., m, Q, N]
        dq = d_qs * dec.q_sub * scale
        d_bq = d_qs * qs
        dk = (d_ks * dec.k_sub).sum(-3)
        d_b = -(d_ks * ks).sum(-3)
        # inter-chunk output and the states
        qi = scale * qc * dec.q_inter
        d_qi = torch.matmul(dyc, states[:-1].mT)
        dq += d_qi * dec.q_inter * scale
        d_bq += d_qi * qi
        d_direct = torch.matmul(qi.mT, dyc)  # [n, B, H, N, P]: reaching each entering state
        grads = torch.empty_like(states)  # grads[i] = dL/d(state entering chunk i)
        if d_final is None:
            grads[n] = 0
        else:
            grads[n] = d_final.to(acc)
        gamma = dec.gamma[..., None]
        for i in reversed(range(n)):
            torch.addcmul(d_direct[i], gamma[i], grads[i + 1], out=grads[i])
        d_w = grads[1:]
        d_e = dec.gamma * (d_w * states[:-1]).sum(-1)  # [n, B, H, N]: through gamma
        kd = kc * dec.k_state
        d_kd = torch.matmul(vc, d_w.mT)  # [.., Q, N]
        dv += torch.matmul(kd, d_w)
        dk += d_kd * dec.k_state
        # (the chunk's last key enters the state undecayed: k_state = exp(e - b_{Q-1}) = 1)
        t = (d_kd * kd)[..., :-1, :]
        d_e += t.sum(-2)
        d_b[..., :-1, :] -= t
        # the diagonal: scale (q_t * k_t) . v_t, with the bonus scale (q_t * u * k_t) . v_t
        d_bonus = None
        if bonus is None:
            dq += d_diag * kc
            dk += d_diag * qc
        else:
            dq += d_diag * u * kc
            dk += d_diag * u * qc
            d_bonus = (d_diag * qc * kc).sum((0, 1, 3)).to(bonus.dtype)
            dq[..., 1:, :] += d_sub * kc[..., :-1, :]
            dk[..., :-1, :] += d_sub * qc[..., 1:, :]
        # back through the cumsums: bq_t = b_t (b_{t-1} with the bonus; bq_0 = 0), e = b_{Q-1}
        if bonus is None:
            d_b += d_bq
        else:
            d_b[..., :-1, :] += d_bq[..., 1:, :]
        d_b[..., -1, :] += d_e
        d_log_alpha = d_b.flip(-2).cumsum(-2).flip(-2)
        T = d.T
        d_s0 = None if initial_state is None else grads[0].to(initial_state.dtype)
        return (from_chunks(dq, T, d.G, q.dtype), from_chunks(dk, T, d.G, k.dtype),
                from_chunks(dv, T, d.H, v.dtype), from_chunks(d_log_alpha, T, d.H, log_alpha.dtype),
                d_s0, d_bonus, None, None, None)


def gla_chunked(
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
    """Chunked GLA (PyTorch, differentiable in q, k, v, log_alpha, initial_state and bonus).

    Same shapes and return convention as :func:`~anatomy.kernels.gla.naive.gla_naive`; any T
    (the last chunk is zero-padded). Half-precision inputs accumulate in float32.
    """
    dims = check_gla_inputs(q, k, v, log_alpha, initial_state, bonus)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1 but got {chunk_size}")
    y, final_state = _GLAChunked.apply(
        q, k, v, log_alpha, initial_state, bonus, scale, chunk_size, dims
    )
    return (y, final_state) if output_final_state else y
