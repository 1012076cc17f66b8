"""Triton chunked delta rule (DeltaNet, Gated DeltaNet, KDA; forward + backward) against the
float64 reference ``delta_rule_naive`` (the recurrence with its transition matrices written out,
from the papers' equations).

Without a GPU the kernels run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set by
tests/conftest.py and here before triton is imported), so sizes are small.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="triton is not installed (optional dependency)")

from anatomy.kernels import delta_rule, delta_rule_naive
from anatomy.kernels.delta_rule import auto_backend
from anatomy.kernels.delta_rule.triton_chunk import delta_rule_chunked_triton
from kernel_checks import FP32_TOL, HALF_GRAD_TOL, HALF_OUT_TOL, assert_close_rmse

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(B, T, H, N, P, gate, *, decay, seed):
    """q [B,T,H,N]; k L2-normalised (as in DeltaNet); v [B,T,H,P]; beta in (0, 1) [B,T,H];
    log_a = -decay * U(0,1): None, [B,T,H] or [B,T,H,N]; initial_state [B,H,N,P]."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, N, generator=gen) / N**0.5
    k = F.normalize(torch.randn(B, T, H, N, generator=gen), dim=-1)
    v = torch.randn(B, T, H, P, generator=gen)
    beta = torch.rand(B, T, H, generator=gen)
    shape = {"none": None, "scalar": (B, T, H), "channel": (B, T, H, N)}[gate]
    log_a = None if shape is None else -decay * torch.rand(*shape, generator=gen)
    s0 = torch.randn(B, H, N, P, generator=gen)
    return [q, k, v, beta, log_a, s0]


def outputs_and_grads(fn, inputs, **kwargs):
    """fn's [o, final state, gradients of every input given] for a fixed random cotangent."""
    q, k, v, beta, log_a, s0 = inputs
    o, state = fn(q, k, v, beta, log_a=log_a, initial_state=s0, output_final_state=True,
                  **kwargs)
    gen = torch.Generator().manual_seed(123)
    do = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.device)
    ds = torch.randn(state.shape, generator=gen, dtype=torch.float64).to(o.device)
    loss = (o.double() * do).sum() + (state.double() * ds).sum()
    present = [x for x in inputs if x is not None]
    return [o, state, *torch.autograd.grad(loss, present)]


def names(gate):
    return ["o", "final_state", "dq", "dk", "dv", "dbeta"] + (
        [] if gate == "none" else ["dlog_a"]) + ["dinitial_state"]


@pytest.mark.parametrize(
    "B,T,chunk,H,N,P,gate,decay,dtype",
    [
        (2, 1, 16, 1, 16, 16, "none", 0.0, torch.float32),
        (1, 24, 16, 2, 16, 24, "none", 0.0, torch.float32),
        (1, 33, 32, 1, 8, 16, "scalar", 1.0, torch.float32),
        # log_a down to -10: in-chunk cumsums reach about -320, whose unpaired exp overflows
        (1, 64, 64, 1, 16, 16, "channel", 10.0, torch.float32),
        (1, 33, 16, 1, 16, 16, "channel", 1.0, torch.float16),
        (1, 20, 16, 1, 16, 16, "scalar", 1.0, torch.bfloat16),
    ],
)
def test_triton_delta_rule_matches_naive(B, T, chunk, H, N, P, gate, decay, dtype):
    inputs = make_inputs(B, T, H, N, P, gate, decay=decay, seed=T)
    ref = [None if x is None else x.to(dtype).double().requires_grad_() for x in inputs]
    want = outputs_and_grads(delta_rule_naive, ref, scale=0.5)
    got_inputs = [None if x is None else x.to(dtype).to(DEVICE).requires_grad_() for x in inputs]
    got = outputs_and_grads(delta_rule_chunked_triton, got_inputs, scale=0.5, chunk_size=chunk)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    for name, g, w in zip(names(gate), got, want):
        if dtype == torch.float32:
            tol = FP32_TOL  # relative RMSE against float64
        else:  # the reference sees the same rounded inputs; the kernel rounds o and grads
            tol = HALF_OUT_TOL if name in ("o", "final_state") else HALF_GRAD_TOL
        if dtype == torch.bfloat16:
            tol *= 4  # 8-bit mantissa: o and the gradients are rounded to it once
        assert_close_rmse(g.cpu(), w, tol, f"triton delta_rule T={T} Q={chunk} {gate} {name}")


def test_triton_delta_rule_without_initial_state_or_final_gradient():
    q, k, v, beta, log_a, _ = make_inputs(1, 20, 1, 16, 16, "scalar", decay=1.0, seed=3)
    tensors = [x.to(DEVICE).requires_grad_() for x in (q, k, v, beta, log_a)]
    o = delta_rule(*tensors[:4], log_a=tensors[4], scale=0.5, chunk_size=16, backend="triton")
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(1))
    got = [o, *torch.autograd.grad((o * do.to(DEVICE)).sum(), tensors)]
    ref = [x.detach().cpu().double().requires_grad_() for x in tensors]
    o_ref = delta_rule_naive(*ref[:4], log_a=ref[4], scale=0.5)
    want = [o_ref, *torch.autograd.grad((o_ref * do.double()).sum(), ref)]
    for name, g, w in zip(["o", "dq", "dk", "dv", "dbeta", "dlog_a"], got, want):
        assert_close_rmse(g.cpu(), w, FP32_TOL, f"delta_rule(backend='triton') {name}")


def test_auto_picks_triton_for_cuda_tensors_only():
    q, k, v, beta, log_a, s0 = make_inputs(1, 4, 1, 16, 16, "scalar", decay=1.0, seed=0)
    assert auto_backend(q, k, v, beta, log_a, s0) in ("cpu", "torch")
    if torch.cuda.is_available():
        assert auto_backend(*(x.cuda() for x in (q, k, v, beta, log_a, s0))) == "triton"


def test_triton_delta_rule_rejects_chunks_that_are_not_tiles():
    q, k, v, beta, _, _ = make_inputs(1, 8, 1, 16, 16, "none", decay=0.0, seed=0)
    for chunk in (8, 48):
        with pytest.raises(ValueError, match="chunk_size: expected a power of two >= 16"):
            delta_rule_chunked_triton(q, k, v, beta, chunk_size=chunk)
