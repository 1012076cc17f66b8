"""A chunked PyTorch GLA peer for bench/kernels.py, written from the GLA paper's algorithm.

Yang et al., "Gated Linear Attention Transformers with Hardware-Efficient Training" (2024),
Section 4 / Listing 1: chunks of C steps with the in-chunk cumsum b of the log forget gate;
inter-chunk: o = (q * exp(b)) S, S <- diag(exp(b_C)) S + (k * exp(b_C - b))^T v (a loop over
chunks); intra-chunk, secondary chunks of c steps: inside a sub-chunk the exact
sum_n q_tn k_sn exp(b_tn - b_sn) (no matmul), between sub-chunks the factorised matmul with
exponents relative to the query sub-chunk's first step z: (q * exp(b - z)) (k * exp(z - b))^T.
Vectorised over batch, heads, chunks and sub-chunks (the listing loops over them); autograd
through PyTorch ops. Not part of the package: a baseline only.
"""

from __future__ import annotations

import torch


def gla_chunk_paper(q, k, v, log_alpha, *, scale=1.0, chunk=64, sub=16):
    """q, k, log_alpha [B, T, H, N], v [B, T, H, P], T a multiple of ``chunk``; returns o."""
    B, T, H, N = q.shape
    P = v.shape[-1]
    n, m = T // chunk, chunk // sub
    q, k, v, g = (x.transpose(1, 2).reshape(B, H, n, chunk, x.shape[-1])
                  for x in (q, k, v, log_alpha))
    b = g.cumsum(-2)
    # inter-chunk, one chunk at a time
    q_inter = scale * q * b.exp()
    k_state = k * (b[..., -1:, :] - b).exp()
    gamma = b[..., -1, :].exp()[..., None]  # [B, H, n, N, 1]
    state = q.new_zeros(B, H, N, P)
    outs = []
    for i in range(n):
        outs.append(q_inter[:, :, i] @ state)
        state = gamma[:, :, i] * state + k_state[:, :, i].mT @ v[:, :, i]
    o = torch.stack(outs, dim=2)  # [B, H, n, C, P]
    # intra-chunk: sub-chunks [B, H, n, m, c, N]
    qs, ks, bs = (x.reshape(B, H, n, m, sub, N) for x in (q, k, b))
    i = torch.arange(sub, device=q.device)
    causal = (i[None, :] <= i[:, None])[..., None]  # [c, c, 1]
    seg = (bs[..., :, None, :] - bs[..., None, :, :]).masked_fill(~causal, float("-inf"))
    inside = torch.einsum("...tn,...sn,...tsn->...ts", qs, ks, seg.exp())  # [.., m, c, c]
    z = bs[..., :1, :]  # [B, H, n, m, 1, N]: each sub-chunk's first step
    q_rel = qs * (bs - z).exp()
    # keys of sub-chunk u seen from sub-chunk j: k_u exp(z_j - b_u), u < j
    earlier = torch.ones(m, m, dtype=torch.bool, device=q.device).tril(-1)[..., None, None]
    k_rel = ks[..., None, :, :, :] * (z[..., :, None, :, :] - bs[..., None, :, :, :]).masked_fill(
        ~earlier, float("-inf")).exp()  # [B, H, n, m(j), m(u), c, N]
    across = torch.einsum("...jtn,...jusn->...jtus", q_rel, k_rel)  # [.., m, c, m, c]
    eye = torch.eye(m, dtype=q.dtype, device=q.device)
    attn = across + torch.einsum("ju,...jts->...jtus", eye, inside)
    o = o + scale * attn.reshape(B, H, n, chunk, chunk) @ v
    return o.reshape(B, H, T, P).transpose(1, 2)
