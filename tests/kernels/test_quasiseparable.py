"""Quasiseparable (Hydra) mixer: explicit matrix vs the shift/flip construction vs fast path."""

from __future__ import annotations

import pytest
import torch
from anatomy.kernels import quasiseparable, quasiseparable_naive, ssd_recurrent
from anatomy.kernels.quasiseparable import quasiseparable_matrix, shift
from kernel_checks import FP32_TOL, HALF_OUT_TOL, assert_close_rmse, rel_rmse


def make_qs_inputs(B, T, G, H, N, P, *, dtype=torch.float64, diag_per_step=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q_f, k_f, q_b, k_b = (torch.randn(B, T, G, N, generator=gen) / N**0.5 for _ in range(4))
    v = torch.randn(B, T, H, P, generator=gen)
    log_a_f, log_a_b = (-torch.rand(B, T, H, generator=gen) for _ in range(2))
    diag = torch.randn(B, T, H, generator=gen) if diag_per_step else torch.randn(H, generator=gen)
    return [x.to(dtype).requires_grad_() for x in (q_f, k_f, q_b, k_b, v, log_a_f, log_a_b, diag)]


def hydra_construction(q_f, k_f, q_b, k_b, v, log_a_f, log_a_b, diag, scale):
    """shift(SS(X)) + flip(shift(SS(flip X))) + D X, with SS the recurrent SSD scan."""
    flip = lambda x: x.flip(1)
    fwd = shift(ssd_recurrent(q_f, k_f, v, log_a_f, scale=scale))
    bwd = flip(shift(ssd_recurrent(flip(q_b), flip(k_b), flip(v), flip(log_a_b), scale=scale)))
    d = diag if diag.dim() == 3 else diag.expand(v.shape[:3])
    return fwd + bwd + d[..., None] * v


@pytest.mark.parametrize("G,diag_per_step", [(1, True), (2, False), (4, True)])
def test_naive_matrix_matches_hydra_shift_flip_construction(G, diag_per_step):
    args = make_qs_inputs(2, 9, G, 4, 3, 2, diag_per_step=diag_per_step, seed=G)
    want = hydra_construction(*args, scale=0.7)
    got = quasiseparable_naive(*args, scale=0.7)
    assert rel_rmse(got, want) < 1e-12


def test_matrix_is_quasiseparable_with_free_diagonal():
    args = make_qs_inputs(1, 12, 1, 1, 2, 1)
    q_f, k_f, q_b, k_b, _, la_f, la_b, diag = (x.detach() for x in args)
    M = quasiseparable_matrix(q_f, k_f, q_b, k_b, la_f, la_b, diag, heads=1)[0, 0]
    torch.testing.assert_close(torch.diagonal(M), diag[0, :, 0])
    # Any block strictly below (or above) the diagonal has rank <= N = 2.
    assert torch.linalg.matrix_rank(M[6:, :6]) <= 2
    assert torch.linalg.matrix_rank(M[:6, 6:]) <= 2
    # Entry convention: M[t, s] = exp(sum_{i=s+1..t-1} log_a_f_i) (q_f[t-1] . k_f[s]) for s < t.
    t, s = 7, 3
    want = torch.exp(la_f[0, s + 1 : t, 0].sum()) * (q_f[0, t - 1, 0] @ k_f[0, s, 0])
    torch.testing.assert_close(M[t, s], want)
    want_up = torch.exp(la_b[0, s + 1 : t, 0].sum()) * (q_b[0, s + 1, 0] @ k_b[0, t, 0])
    torch.testing.assert_close(M[s, t], want_up)


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("T,chunk,G", [(1, 16, 1), (64, 16, 2), (65, 32, 4), (300, 64, 1)])
def test_fast_path_matches_naive_outputs_and_gradients(T, chunk, G, backend):
    """"torch": the PyTorch chunked SSD; "auto": on this CPU, the C++ kernel where it builds."""
    args = make_qs_inputs(2, T, G, 4, 8, 8, dtype=torch.float32, seed=T)
    ref_args = [x.detach().double().requires_grad_() for x in args]
    dy = torch.randn(2, T, 4, 8, dtype=torch.float64)
    want_y = quasiseparable_naive(*ref_args, scale=0.5)
    want = [want_y, *torch.autograd.grad((want_y * dy).sum(), ref_args, materialize_grads=True)]
    got_y = quasiseparable(*args, scale=0.5, chunk_size=chunk, backend=backend)
    got = [got_y, *torch.autograd.grad((got_y.double() * dy).sum(), args, materialize_grads=True)]
    names = ["y", "dq_f", "dk_f", "dq_b", "dk_b", "dv", "dlog_a_f", "dlog_a_b", "ddiag"]
    for name, g, w in zip(names, got, want):
        if T == 1 and name in ("dq_f", "dk_f", "dq_b", "dk_b", "dlog_a_f", "dlog_a_b"):
            assert g.abs().max() == 0  # a single step has no off-diagonal entries
            continue
        assert_close_rmse(g, w, FP32_TOL, f"{backend} T={T} {name}")


def test_fast_path_half_precision():
    args = make_qs_inputs(1, 200, 1, 4, 16, 16, dtype=torch.float16)
    want = quasiseparable_naive(*(x.detach().double() for x in args))
    got = quasiseparable(*args, chunk_size=64)
    assert got.dtype == torch.float16
    assert_close_rmse(got, want, HALF_OUT_TOL, "fp16 quasiseparable")


def test_diag_shape_is_validated():
    args = make_qs_inputs(1, 5, 1, 4, 2, 2)
    args[-1] = torch.zeros(3)
    with pytest.raises(ValueError, match="diag: expected axis H"):
        quasiseparable(*args)
