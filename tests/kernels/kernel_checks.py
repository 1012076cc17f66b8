"""Shared helpers for kernel tests: random SSD inputs and the relative-RMSE tolerance check."""

from __future__ import annotations

import torch

# Tolerances (relative RMSE = ||got - want|| / ||want||) against a float64 reference.
FP32_TOL = 1e-5
HALF_OUT_TOL = 4e-3
HALF_GRAD_TOL = 5e-3


def rel_rmse(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm().clamp_min(1e-300))


def assert_close_rmse(got: torch.Tensor, want: torch.Tensor, tol: float, what: str) -> None:
    err = rel_rmse(got, want)
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    assert err <= tol, f"{what}: relative RMSE {err:.2e} > {tol:.1e}"


def make_inputs(B, T, G, H, N, P, *, dtype=torch.float32, decay=0.5, seed=0, initial=True):
    """q, k [B,T,G,N]; v [B,T,H,P]; log_a = -decay * U(0,1) [B,T,H]; initial_state [B,H,N,P]."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, G, N, generator=gen) / N**0.5
    k = torch.randn(B, T, G, N, generator=gen)
    v = torch.randn(B, T, H, P, generator=gen)
    log_a = -decay * torch.rand(B, T, H, generator=gen)
    s0 = torch.randn(B, H, N, P, generator=gen) if initial else None
    tensors = [q, k, v, log_a] + ([s0] if initial else [])
    return [t.to(dtype).requires_grad_() for t in tensors]


def outputs_and_grads(fn, inputs, **kwargs):
    """Run fn with a final state, backprop a fixed random cotangent; return [y, S, grads...]."""
    q, k, v, log_a, *rest = inputs
    s0 = rest[0] if rest else None
    y, state = fn(q, k, v, log_a, initial_state=s0, output_final_state=True, **kwargs)
    gen = torch.Generator().manual_seed(123)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    ds = torch.randn(state.shape, generator=gen, dtype=torch.float64)
    loss = (y.double() * dy).sum() + (state.double() * ds).sum()
    grads = torch.autograd.grad(loss, inputs)
    return [y, state, *grads]
