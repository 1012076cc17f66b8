"""The study's Gated Linear Attention mixer (scripts/study/zoology.anat, `gla`) against the
recurrence of Yang et al. (2024), written here step by step from the paper:
S_t = diag(alpha_t) S_{t-1} + k_t^T v_t, o_t = q_t S_t / sqrt(n), log alpha_t =
logsigmoid(x_t W_a) / 16, with the module's own weights. The state is n x p: the values
have an axis of their own (with v on the keys' axis the product is one scalar per channel).
"""

from __future__ import annotations

from pathlib import Path

import torch
from anatomy.lowering import compile as compile_anat
from torch.nn import functional as F

STUDY = Path(__file__).resolve().parents[1] / "scripts" / "study" / "zoology.anat"


def reference_gla(x, w_q, w_k, w_v, w_a, w_y):
    """One head: x [b, t, d]; w_* [d, 1, n]; w_y [1, p, d]."""
    n = w_q.shape[-1]
    q, k, v = (x @ w[:, 0] for w in (w_q, w_k, w_v))
    log_alpha = F.logsigmoid(x @ w_a[:, 0]) / 16
    state = x.new_zeros(x.shape[0], n, v.shape[-1])
    out = []
    for t in range(x.shape[1]):
        state = log_alpha[:, t, :, None].exp() * state + k[:, t, :, None] * v[:, t, None, :]
        out.append(torch.einsum("bn,bnp->bp", q[:, t], state) / n ** 0.5)
    return torch.stack(out, 1) @ w_y[0]


def test_study_gla_is_the_gla_recurrence():
    torch.manual_seed(0)
    module = compile_anat(STUDY, "gla", d=8, h=1)
    w = dict(module.named_parameters())
    x = torch.randn(2, 70, 8)  # more than one chunk of 64
    with torch.no_grad():
        got = module(x)
        want = reference_gla(x, w["w_q"], w["w_k"], w["w_v"], w["w_log_alpha"], w["w_y"])
    rel_rmse = ((got - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt()).item()
    assert rel_rmse <= 1e-5, rel_rmse
