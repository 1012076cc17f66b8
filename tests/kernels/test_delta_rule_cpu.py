"""The C++ CPU delta-rule kernel (forward and hand-derived backward) against the float64 naive
recurrence (the papers' equations written out) and fla's recurrent references.

Every comparison is a relative RMSE: outputs, final state and the gradients of all inputs within
FP32_TOL = 1e-5 in float32, HALF_OUT_TOL / HALF_GRAD_TOL for half-precision inputs. Inputs as the
models use them (see test_delta_rule.make_inputs): k L2-normalised, beta in (0, 1), log_a <= 0.
"""

from __future__ import annotations

import pytest
import torch
from anatomy.kernels import delta_rule_naive
from anatomy.kernels.delta_rule import (
    auto_backend,
    cpu_kernel_available,
    delta_rule,
    delta_rule_chunked_cpu,
)
from anatomy.kernels.delta_rule import cpu_chunk as cpu_chunk_module
from kernel_checks import FP32_TOL, HALF_GRAD_TOL, HALF_OUT_TOL, assert_close_rmse, rel_rmse
from test_delta_rule import (
    CHUNKED_CASES,
    GATES,
    NAMES,
    assert_matches_naive,
    fla_reference,
    make_inputs,
    outputs_and_grads,
)

pytestmark = pytest.mark.skipif(
    not cpu_kernel_available(), reason="the C++ CPU kernel did not build (see its warning)")


@pytest.mark.parametrize("T,chunk,gate,decay", CHUNKED_CASES)
def test_cpu_matches_naive(T, chunk, gate, decay):
    """Ragged and whole chunks, the three gates; a per-channel gate with decay 0.5 takes the
    factorised scores, with decay 3 or 8 (a chunk's spread of g above 60) the exact ones."""
    inputs = make_inputs(2, T, 2, 16, 8, gate, decay=decay, seed=T)
    got = assert_matches_naive(delta_rule_chunked_cpu, inputs, f"T={T} C={chunk} {gate} {decay}",
                               chunk_size=chunk)
    assert all(g is None or g.dtype == torch.float32 for g in got)


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("N,P", [(64, 64), (32, 48)])
def test_cpu_model_sizes(gate, N, P):
    """The benchmark's head sizes N = P = 64, and N != P, over three chunks (the last ragged)."""
    inputs = make_inputs(1, 150, 2, N, P, gate, decay=0.5, seed=N + P)
    assert_matches_naive(delta_rule_chunked_cpu, inputs, f"{gate} N={N} P={P}", chunk_size=64)


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("chunk", [1, 7])
def test_cpu_odd_chunk_sizes(gate, chunk):
    inputs = make_inputs(1, 30, 2, 8, 4, gate, decay=1.0, seed=chunk)
    assert_matches_naive(delta_rule_chunked_cpu, inputs, f"{gate} C={chunk}", chunk_size=chunk)


@pytest.mark.parametrize("gate", GATES)
def test_cpu_without_initial_or_final_state(gate):
    """No initial state, and a loss on o alone (no gradient flows into the final state)."""
    q, k, v, beta, log_a, _ = make_inputs(2, 77, 2, 16, 16, gate, seed=4, initial=False)
    do = torch.randn(2, 77, 2, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    leaves = [x for x in (q, k, v, beta, log_a) if x is not None]
    want_leaves = [x.detach().double().requires_grad_() for x in leaves]
    wq, wk, wv, wb, *wa = want_leaves
    want = delta_rule_naive(wq, wk, wv, wb, log_a=wa[0] if wa else None, scale=0.25)
    got = delta_rule_chunked_cpu(q, k, v, beta, log_a=log_a, scale=0.25, chunk_size=32)
    assert_close_rmse(got, want, FP32_TOL, f"{gate} o")
    want_grads = torch.autograd.grad((want * do).sum(), want_leaves)
    got_grads = torch.autograd.grad((got.double() * do).sum(), leaves)
    for name, g, w in zip(["dq", "dk", "dv", "dbeta", "dlog_a"], got_grads, want_grads):
        assert_close_rmse(g, w, FP32_TOL, f"{gate} {name}")


@pytest.mark.parametrize(
    "dtype,T,chunk,gate,decay",
    [
        (torch.float16, 65, 16, "channel", 0.5),
        (torch.float16, 200, 64, "none", 0.5),
        (torch.bfloat16, 63, 32, "scalar", 0.5),
        (torch.bfloat16, 150, 64, "channel", 8.0),
    ],
)
def test_cpu_half_precision(dtype, T, chunk, gate, decay):
    """Half inputs are computed in float32: against the float64 reference on the same
    (half-rounded) inputs the error is the output rounding; gradients in the inputs' dtypes."""
    inputs = make_inputs(1, T, 2, 16, 16, gate, decay=decay, dtype=dtype, seed=T)
    got = assert_matches_naive(delta_rule_chunked_cpu, inputs, f"{dtype} T={T} {gate}",
                               out_tol=HALF_OUT_TOL, grad_tol=HALF_GRAD_TOL, chunk_size=chunk)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    for x, gx in zip(inputs, got[2:]):
        assert x is None or gx.dtype == x.dtype


@pytest.mark.parametrize("gate,decay", [("none", 0.0), ("scalar", 5.0), ("channel", 5.0),
                                        ("channel", 0.0)])
def test_cpu_long_sequence_is_finite(gate, decay):
    """T = 65,536 in float32, with strong decay and without: outputs, state and all gradients
    finite, and the last 64 outputs match the float64 recurrence continued from the kernel's own
    state at T - 64 (relative RMSE <= 1e-5: no drift at the end of the sequence)."""
    T = 65536
    q, k, v, beta, log_a, _ = make_inputs(1, T, 1, 8, 8, gate, decay=decay, initial=False)
    o, state = delta_rule_chunked_cpu(q, k, v, beta, log_a=log_a, scale=0.5,
                                      output_final_state=True)
    (o.sum() + state.sum()).backward()
    for name, x in [("o", o), ("state", state), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad),
                    ("dbeta", beta.grad), ("dlog_a", None if log_a is None else log_a.grad)]:
        assert x is None or torch.isfinite(x).all(), f"{name} has inf/NaN ({gate}, {decay})"
    head = [x[:, : T - 64].detach() for x in (q, k, v, beta)]
    _, middle = delta_rule_chunked_cpu(*head, log_a=None if log_a is None else
                                       log_a[:, : T - 64].detach(), output_final_state=True)
    tail = [x[:, T - 64 :].detach().double() for x in (q, k, v, beta)]
    want = delta_rule_naive(*tail, scale=0.5, initial_state=middle.double(),
                            log_a=None if log_a is None else log_a[:, T - 64 :].detach().double())
    assert rel_rmse(o[:, T - 64 :], want) < FP32_TOL


@pytest.mark.parametrize("gate", GATES)
def test_cpu_agrees_with_fla_references(gate):
    """Ours (C++, fp32) against fla's recurrent references (fp32): outputs, final state and
    every gradient, at N = 16 (fla's delta_rule_recurrence fixes the scale N**-0.5)."""
    reference = fla_reference(gate)
    N = 16
    inputs = make_inputs(2, 100, 2, N, 8, gate, decay=1.0, seed=21)
    want = outputs_and_grads(lambda q, k, v, beta, log_a, initial_state, output_final_state,
                             **kw: reference(q, k, v, beta, log_a, N**-0.5, initial_state),
                             inputs)
    fresh = [None if x is None else x.detach().requires_grad_() for x in inputs]
    got = outputs_and_grads(delta_rule_chunked_cpu, fresh, scale=N**-0.5, chunk_size=32)
    for name, g, w in zip(NAMES, got, want):
        if w is not None:
            assert_close_rmse(g, w, FP32_TOL, f"fla {gate} {name}")


def test_auto_backend_choice_and_fallback(monkeypatch):
    q, k, v, beta, log_a, s0 = (x.detach() for x in make_inputs(1, 33, 2, 4, 4, "scalar"))
    assert auto_backend(q, k, v, beta, log_a, s0) == "cpu"
    assert auto_backend(q.double(), k, v, beta) == "torch"
    want = delta_rule_naive(q, k, v, beta, log_a=log_a, initial_state=s0)
    got = delta_rule(q, k, v, beta, log_a=log_a, initial_state=s0, backend="cpu", chunk_size=16)
    assert_close_rmse(got, want, FP32_TOL, "backend cpu")
    # float64 is refused by name (backend "torch" takes it)
    with pytest.raises(ValueError, match="backend 'cpu' takes CPU tensors in float32"):
        delta_rule(q.double(), k.double(), v.double(), beta.double(), backend="cpu")
    # the kernel switched off (or failing to build): "auto" falls back to PyTorch chunked, and
    # asking for "cpu" explicitly says why it cannot
    monkeypatch.setenv("ANATOMY_CPU_KERNEL", "0")
    cpu_chunk_module._extension.cache_clear()
    try:
        assert auto_backend(q, k, v, beta) == "torch"
        with pytest.raises(RuntimeError, match="unavailable"):
            delta_rule(q, k, v, beta, backend="cpu")
    finally:
        monkeypatch.delenv("ANATOMY_CPU_KERNEL")
        cpu_chunk_module._extension.cache_clear()
    assert auto_backend(q, k, v, beta) == "cpu"
