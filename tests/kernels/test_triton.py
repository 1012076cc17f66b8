"""Triton chunked SSD (forward + backward) against the naive reference.

Without a GPU the kernels run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set
here before the kernels are defined), so sizes are small.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="triton is not installed (optional dependency)")

from anatomy.kernels import ssd, ssd_naive
from anatomy.kernels.ssd.triton_chunk import ssd_chunked_triton
from kernel_checks import (
    FP32_TOL,
    HALF_GRAD_TOL,
    HALF_OUT_TOL,
    assert_close_rmse,
    make_inputs,
    outputs_and_grads,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ["y", "final_state", "dq", "dk", "dv", "dlog_a", "dinitial_state"]


@pytest.mark.parametrize(
    "T,chunk,G,dtype,decay",
    [
        (1, 16, 1, torch.float32, 0.5),
        (63, 16, 2, torch.float32, 0.5),
        (64, 32, 4, torch.float32, 0.5),
        (65, 64, 1, torch.float32, 8.0),
        (130, 128, 2, torch.float32, 0.5),
        (65, 16, 2, torch.float16, 0.5),
        (64, 32, 4, torch.float16, 5.0),
    ],
)
def test_triton_matches_naive(T, chunk, G, dtype, decay):
    inputs = make_inputs(1, T, G, 4, 16, 16, dtype=dtype, decay=decay, seed=T)
    ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
    want = outputs_and_grads(ssd_naive, ref_inputs, scale=0.5)
    inputs = [x.detach().to(DEVICE).requires_grad_() for x in inputs]
    got = outputs_and_grads(ssd_chunked_triton, inputs, scale=0.5, chunk_size=chunk)
    assert got[0].dtype == dtype
    for name, g, w in zip(NAMES, got, want):
        if dtype == torch.float32:
            tol = FP32_TOL
        else:
            tol = HALF_OUT_TOL if name in ("y", "final_state") else HALF_GRAD_TOL
        assert_close_rmse(g.cpu(), w, tol, f"triton T={T} Q={chunk} G={G} {dtype} {name}")


def test_backend_triton_is_callable_explicitly():
    q, k, v, log_a, s0 = (x.detach().to(DEVICE) for x in make_inputs(1, 40, 1, 2, 16, 16))
    want = ssd_naive(q.cpu(), k.cpu(), v.cpu(), log_a.cpu(), initial_state=s0.cpu())
    got = ssd(q, k, v, log_a, initial_state=s0, backend="triton", chunk_size=16)
    assert_close_rmse(got.cpu(), want, FP32_TOL, "ssd(backend='triton')")


def test_triton_rejects_non_power_of_two_chunks():
    q, k, v, log_a = (x.detach() for x in make_inputs(1, 8, 1, 1, 16, 16, initial=False))
    with pytest.raises(ValueError, match="chunk_size: expected a power of two"):
        ssd_chunked_triton(q, k, v, log_a, chunk_size=24)


@pytest.mark.parametrize("chunk,takes", [(16, True), (64, True), (24, False), (8, False)])
def test_auto_sends_cuda_tensors_to_triton_only_for_chunks_its_tiles_take(chunk, takes):
    """Triton's tiles need a power-of-two chunk >= 16; `auto` must fall back to the PyTorch
    chunked path for any other chunk rather than fail (a diagram may say chunk=24)."""
    from types import SimpleNamespace

    from anatomy.kernels.ssd import triton_takes
    assert triton_takes(SimpleNamespace(is_cuda=True), chunk) is takes
    assert triton_takes(SimpleNamespace(is_cuda=False), chunk) is False
