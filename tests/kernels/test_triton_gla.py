"""Triton chunked GLA (forward + backward, with and without RWKV-6's bonus) against the float64
quadratic reference ``gla_naive`` (written from the GLA paper's masked form).

Without a GPU the kernels run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set by
tests/conftest.py and here before triton is imported), so sizes are small.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="triton is not installed (optional dependency)")

from anatomy.kernels import gla, gla_naive
from anatomy.kernels.gla import auto_backend
from anatomy.kernels.gla.triton_chunk import gla_chunked_triton
from kernel_checks import FP32_TOL, HALF_GRAD_TOL, HALF_OUT_TOL, assert_close_rmse

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ["y", "final_state", "dq", "dk", "dv", "dlog_alpha", "dinitial_state", "dbonus"]


def make_inputs(B, T, G, H, N, P, *, decay, bonus, seed):
    """q, k [B,T,G,N]; v [B,T,H,P]; log_alpha = -decay * U(0,1) [B,T,H,N]; initial_state
    [B,H,N,P]; bonus [H,N] when asked."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, G, N, generator=gen) / N**0.5
    k = torch.randn(B, T, G, N, generator=gen)
    v = torch.randn(B, T, H, P, generator=gen)
    log_alpha = -decay * torch.rand(B, T, H, N, generator=gen)
    s0 = torch.randn(B, H, N, P, generator=gen)
    u = torch.randn(H, N, generator=gen)
    return [q, k, v, log_alpha, s0] + ([u] if bonus else [])


def outputs_and_grads(fn, inputs, **kwargs):
    """fn's [y, final state, gradients of every input] for a fixed random dense cotangent."""
    q, k, v, log_alpha, s0, *rest = inputs
    bonus = rest[0] if rest else None
    y, state = fn(q, k, v, log_alpha, initial_state=s0, output_final_state=True, bonus=bonus,
                  **kwargs)
    gen = torch.Generator().manual_seed(123)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    ds = torch.randn(state.shape, generator=gen, dtype=torch.float64)
    loss = (y.double() * dy.to(y.device)).sum() + (state.double() * ds.to(y.device)).sum()
    return [y, state, *torch.autograd.grad(loss, inputs)]


@pytest.mark.parametrize(
    "B,T,chunk,G,H,N,P,decay,bonus,dtype",
    [
        (2, 1, 16, 1, 2, 16, 16, 1.0, True, torch.float32),
        (1, 40, 16, 1, 2, 16, 16, 1.0, True, torch.float32),
        (1, 33, 32, 2, 2, 8, 24, 5.0, False, torch.float32),
        # log_alpha down to -10: in-chunk cumsums reach about -320, whose unpaired exp overflows
        (1, 64, 64, 1, 2, 16, 16, 10.0, True, torch.float32),
        (1, 33, 16, 1, 2, 16, 16, 1.0, False, torch.float16),
        (1, 20, 16, 1, 2, 16, 16, 2.0, True, torch.bfloat16),
    ],
)
def test_triton_gla_matches_naive(B, T, chunk, G, H, N, P, decay, bonus, dtype):
    inputs = make_inputs(B, T, G, H, N, P, decay=decay, bonus=bonus, seed=T)
    ref = [x.to(dtype).double().requires_grad_() for x in inputs]
    want = outputs_and_grads(gla_naive, ref, scale=0.5)
    got_inputs = [x.to(dtype).to(DEVICE).requires_grad_() for x in inputs]
    got = outputs_and_grads(gla_chunked_triton, got_inputs, scale=0.5, chunk_size=chunk)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    for name, g, w in zip(NAMES, got, want):
        if dtype == torch.float32:
            tol = FP32_TOL  # relative RMSE against float64
        else:  # the reference sees the same rounded inputs; the kernel rounds y and grads
            tol = HALF_OUT_TOL if name in ("y", "final_state") else HALF_GRAD_TOL
        if dtype == torch.bfloat16:
            tol *= 4  # 8-bit mantissa: y, dq, dk, dv, dlog_alpha are rounded to it once
        assert_close_rmse(g.cpu(), w, tol, f"triton gla T={T} Q={chunk} {dtype} {name}")


def test_triton_gla_without_initial_state_or_final_gradient():
    q, k, v, log_alpha, _ = make_inputs(1, 20, 1, 2, 16, 16, decay=1.0, bonus=False, seed=5)
    q, k, v, log_alpha = (x.to(DEVICE).requires_grad_() for x in (q, k, v, log_alpha))
    y = gla(q, k, v, log_alpha, scale=0.5, chunk_size=16, backend="triton")
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    got = [y, *torch.autograd.grad((y * dy).sum(), (q, k, v, log_alpha))]
    ref = [x.detach().cpu().double().requires_grad_() for x in (q, k, v, log_alpha)]
    y_ref = gla_naive(*ref, scale=0.5)
    want = [y_ref, *torch.autograd.grad((y_ref * dy.cpu().double()).sum(), ref)]
    for name, g, w in zip(["y", "dq", "dk", "dv", "dlog_alpha"], got, want):
        assert_close_rmse(g.cpu(), w, FP32_TOL, f"gla(backend='triton') {name}")


def test_auto_picks_triton_for_cuda_tensors_only():
    q, k, v, log_alpha, _ = make_inputs(1, 4, 1, 1, 16, 16, decay=1.0, bonus=False, seed=0)
    assert auto_backend(q, k, v, log_alpha) in ("cpu", "torch")
    if torch.cuda.is_available():
        cuda = [x.cuda() for x in (q, k, v, log_alpha)]
        assert auto_backend(*cuda) == "triton"


def test_triton_gla_rejects_chunks_that_are_not_tiles():
    q, k, v, log_alpha, _ = make_inputs(1, 8, 1, 1, 16, 16, decay=1.0, bonus=False, seed=0)
    for chunk in (8, 24):
        with pytest.raises(ValueError, match="chunk_size: expected a power of two >= 16"):
            gla_chunked_triton(q, k, v, log_alpha, chunk_size=chunk)
