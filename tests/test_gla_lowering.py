"""A decay per key channel in the diagram (gated linear attention,
`decay(log_alpha[t, h, n], t, s)`) gets the chunked form through the gated kernel and a
step form with a [B, H, N, P] state, both equal to the recurrence written from the paper
(Yang et al. 2024: S_t = diag(alpha_t) S_{t-1} + k_t v_t^T, o_t = q_t S_t)."""

from __future__ import annotations

import pytest
import torch
from anatomy.kernels import gla
from anatomy.lowering.torch_ops import segment_decay

import anatomy

MIXER = """anatomy gla_mixer(x[t, d]) -> y[t, d]
  dims d = 16, h = 2, n = 4, p = d / h
  q[t, h, n] = linear(x)
  k[t, h, n] = linear(x)
  v[t, h, p] = linear(x)
  log_alpha[t, h, n] = -softplus(-linear(x)) / 4
  o[t, h, p] = decay(log_alpha, t, s) * q * k[s, h, n] * v[s, h, p]
  y[t, d] = linear(o)
"""


def gla_recurrence(q, k, v, log_alpha):
    """o_t = q_t S_t, S_t = diag(alpha_t) S_{t-1} + k_t v_t^T; [B, T, H, *] in float64."""
    B, T, H, N = q.shape
    S = torch.zeros(B, H, N, v.shape[-1], dtype=torch.float64)
    out = []
    for t in range(T):
        S = log_alpha[:, t].exp()[..., None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        out.append(torch.einsum("bhn,bhnp->bhp", q[:, t], S))
    return torch.stack(out, 1)


def reference(m, x):
    """The mixer by hand from its parameters: projections, the recurrence, the output."""
    w = dict(m.named_parameters())
    q = torch.einsum("btd,dhn->bthn", x, w["w_q"])
    k = torch.einsum("btd,dhn->bthn", x, w["w_k"])
    v = torch.einsum("btd,dhp->bthp", x, w["w_v"])
    log_alpha = -torch.nn.functional.softplus(-torch.einsum("btd,dhn->bthn", x,
                                                              w["w_log_alpha"])) / 4
    o = gla_recurrence(q, k, v, log_alpha)
    return torch.einsum("bthp,hpd->btd", o, w["w_y"])


@pytest.mark.parametrize("T", [1, 5, 70, 150])
def test_the_chunked_and_step_forms_run_the_gated_kernel_and_match_the_recurrence(T):
    torch.manual_seed(T)
    m = anatomy.compile(MIXER, form="auto").double()
    assert any(n.target is gla for n in m.graph.nodes)  # no [T, T, H, N] decay
    assert not any(n.target is segment_decay for n in m.graph.nodes)
    x = torch.randn(2, T, 16, dtype=torch.float64)
    ref = reference(m, x)
    y = m(x)
    assert (y - ref).abs().max() <= 1e-10 * ref.abs().max()
    parallel = anatomy.compile(MIXER, form="parallel").double()
    parallel.load_state_dict(m.state_dict())
    assert (parallel(x) - ref).abs().max() <= 1e-10 * ref.abs().max()
    state = m.init_state(2, dtype=torch.float64)
    ys = []
    for i in range(0, T, 3):  # a prefill of 3, then chunks of 3
        out, state = m.step(x[:, i:i + 3], state)
        ys.append(out)
    assert state["ssm:o"].shape == (2, 2, 4, 8)  # [B, H, N, P]
    assert (torch.cat(ys, 1) - ref).abs().max() <= 1e-10 * ref.abs().max()


def test_gradients_of_the_chunked_form_match_the_parallel_form():
    torch.manual_seed(0)
    chunked = anatomy.compile(MIXER, form="chunked").double()
    parallel = anatomy.compile(MIXER, form="parallel").double()
    parallel.load_state_dict(chunked.state_dict())
    x = torch.randn(1, 70, 16, dtype=torch.float64, requires_grad=True)
    cot = torch.randn(1, 70, 16, dtype=torch.float64)
    grads = [torch.autograd.grad((m(x) * cot).sum(), [x, *m.parameters()])
             for m in (chunked, parallel)]
    for a, b in zip(*grads):
        assert (a - b).abs().max() <= 1e-9 * b.abs().max()
