"""Delta-rule forms (naive, recurrent, chunked) against the float64 naive reference, and the naive
reference against the papers' defining properties and fla's references (when fla is installed).

Inputs as the models use them: k L2-normalised, beta in (0, 1), log_a <= 0.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from anatomy.kernels import (
    delta_rule,
    delta_rule_chunked,
    delta_rule_naive,
    delta_rule_recurrent,
    delta_rule_step,
)
from anatomy.kernels.delta_rule import chunk as chunk_module
from anatomy.kernels.delta_rule.chunk import MAX_FACTORISED_SPAN, max_chunk_span
from kernel_checks import FP32_TOL, HALF_GRAD_TOL, HALF_OUT_TOL, assert_close_rmse, rel_rmse

GATES = ["none", "scalar", "channel"]
NAMES = ["o", "final_state", "dq", "dk", "dv", "dbeta", "dlog_a", "dinitial_state"]


def make_inputs(B, T, H, N, P, gate, *, decay=0.5, seed=0, dtype=torch.float32, initial=True):
    """q, k (L2-normalised) [B,T,H,N]; v [B,T,H,P]; beta = sigmoid(randn) [B,T,H]; log_a = None
    (gate "none"), -decay * U(0,1) as [B,T,H] ("scalar") or [B,T,H,N] ("channel");
    initial_state [B,H,N,P] or None. All leaves requiring grad (log_a and s0 when present)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, N, generator=gen, dtype=torch.float64)
    k = F.normalize(torch.randn(B, T, H, N, generator=gen, dtype=torch.float64), dim=-1)
    v = torch.randn(B, T, H, P, generator=gen, dtype=torch.float64)
    beta = torch.sigmoid(torch.randn(B, T, H, generator=gen, dtype=torch.float64))
    gate_shape = {"none": None, "scalar": (B, T, H), "channel": (B, T, H, N)}[gate]
    log_a = None
    if gate_shape is not None:
        log_a = -decay * torch.rand(gate_shape, generator=gen, dtype=torch.float64)
    s0 = torch.randn(B, H, N, P, generator=gen, dtype=torch.float64) if initial else None
    return [None if x is None else x.to(dtype).requires_grad_() for x in (q, k, v, beta, log_a, s0)]


def outputs_and_grads(fn, inputs, **kwargs):
    """fn's output and final state, and the gradients of a fixed random projection of both
    with respect to every present input (None where an input is absent)."""
    q, k, v, beta, log_a, s0 = inputs
    o, state = fn(q, k, v, beta, log_a=log_a, initial_state=s0, output_final_state=True,
                  **kwargs)
    gen = torch.Generator().manual_seed(123)
    do = torch.randn(o.shape, generator=gen, dtype=torch.float64)
    ds = torch.randn(state.shape, generator=gen, dtype=torch.float64)
    loss = (o.double() * do).sum() + (state.double() * ds).sum()
    present = [x for x in inputs if x is not None]
    grads = iter(torch.autograd.grad(loss, present))
    return [o, state, *(None if x is None else next(grads) for x in inputs)]


def float64_copies(inputs):
    return [None if x is None else x.detach().double().requires_grad_() for x in inputs]


def assert_matches_naive(fn, inputs, label, *, scale=0.5, out_tol=FP32_TOL, grad_tol=FP32_TOL,
                         **kwargs):
    """fn's output, final state and every gradient against the float64 naive reference."""
    want = outputs_and_grads(delta_rule_naive, float64_copies(inputs), scale=scale)
    got = outputs_and_grads(fn, inputs, scale=scale, **kwargs)
    for name, g, w in zip(NAMES, got, want):
        if w is None:
            assert g is None, f"{label} {name}: a gradient for an absent input"
            continue
        tol = out_tol if name in ("o", "final_state") else grad_tol
        assert_close_rmse(g, w, tol, f"{label} {name}")
    return got


# ---- the naive reference against the equations' defining properties -------------------------


def test_naive_first_step_written_out():
    """T = 1 by hand: S_1 = (I - b k k^T) diag(e^{log_a}) S_0 + b k v^T, o = scale q^T S_1."""
    q, k, v, beta, log_a, s0 = (x.detach() for x in make_inputs(1, 1, 1, 3, 2, "channel",
                                                                   dtype=torch.float64))
    kt, b = k[0, 0, 0], beta[0, 0, 0]
    transition = torch.eye(3, dtype=torch.float64) - b * torch.outer(kt, kt)
    S1 = transition @ torch.diag(torch.exp(log_a[0, 0, 0])) @ s0[0, 0] + b * torch.outer(
        kt, v[0, 0, 0])
    o, S = delta_rule_naive(q, k, v, beta, log_a=log_a, scale=0.3, initial_state=s0,
                            output_final_state=True)
    assert rel_rmse(S[0, 0], S1) < 1e-14
    assert rel_rmse(o[0, 0, 0], 0.3 * q[0, 0, 0] @ S1) < 1e-14


def test_naive_delta_rule_overwrites_an_orthonormal_key():
    """DeltaNet with beta = 1 and orthonormal keys is a key-value store: writing v under key e_i
    replaces what e_i held, so reading with q = e_i returns the latest v written under it."""
    N, P = 4, 3
    keys = torch.eye(N, dtype=torch.float64)[[0, 1, 0, 2, 1]]  # e_0, e_1, e_0 again, ...
    v = torch.randn(1, 5, 1, P, dtype=torch.float64)
    k = keys[None, :, None, :]
    beta = torch.ones(1, 5, 1, dtype=torch.float64)
    _, S = delta_rule_naive(k, k, v, beta, output_final_state=True)
    torch.testing.assert_close(S[0, 0, 0], v[0, 2, 0])  # the second write under e_0
    torch.testing.assert_close(S[0, 0, 1], v[0, 4, 0])
    torch.testing.assert_close(S[0, 0, 2], v[0, 3, 0])
    torch.testing.assert_close(S[0, 0, 3], torch.zeros(P, dtype=torch.float64))


def test_gates_reduce_to_each_other():
    """Gated DeltaNet with log_a = 0 is DeltaNet; KDA with a gate constant over the channels is
    Gated DeltaNet."""
    q, k, v, beta, log_a, s0 = (x.detach() for x in make_inputs(2, 9, 2, 4, 3, "scalar",
                                                                   dtype=torch.float64))
    plain = delta_rule_naive(q, k, v, beta, initial_state=s0)
    zero = delta_rule_naive(q, k, v, beta, log_a=torch.zeros_like(log_a), initial_state=s0)
    assert rel_rmse(zero, plain) < 1e-14
    gated = delta_rule_naive(q, k, v, beta, log_a=log_a, initial_state=s0)
    channel = delta_rule_naive(q, k, v, beta, log_a=log_a[..., None].expand(-1, -1, -1, 4),
                               initial_state=s0)
    assert rel_rmse(channel, gated) < 1e-14
    assert rel_rmse(gated, plain) > 1e-2  # and the gate does act


@pytest.mark.parametrize("gate", GATES)
def test_recurrent_matches_naive_in_float64(gate):
    """The rank-one step and the explicit transition matrix are two readings of one equation."""
    inputs = make_inputs(2, 30, 3, 5, 4, gate, dtype=torch.float64, seed=3)
    want = outputs_and_grads(delta_rule_naive, inputs, scale=0.7)
    got = outputs_and_grads(delta_rule_recurrent, inputs, scale=0.7)
    for name, g, w in zip(NAMES, got, want):
        if w is not None:
            assert rel_rmse(g, w) < 1e-12, name


# ---- the chunked form against the float64 naive reference -----------------------------------

# (T, chunk, gate, decay): ragged and whole chunks, single-step and single-chunk sequences, the
# three gates, mild decay (factorised pairwise decays) and strong decay (the exact path).
CHUNKED_CASES = [
    (1, 16, "channel", 0.5),
    (15, 16, "none", 0.5),
    (63, 16, "scalar", 0.5),
    (64, 32, "channel", 0.5),
    (65, 64, "none", 0.5),
    (100, 16, "scalar", 8.0),
    (100, 32, "channel", 8.0),
    (130, 64, "channel", 0.5),
    (200, 64, "scalar", 0.1),
    (200, 48, "channel", 3.0),
]


@pytest.mark.parametrize("T,chunk,gate,decay", CHUNKED_CASES)
def test_chunked_matches_naive(T, chunk, gate, decay):
    inputs = make_inputs(2, T, 2, 16, 8, gate, decay=decay, seed=T)
    got = assert_matches_naive(delta_rule_chunked, inputs, f"T={T} C={chunk} {gate} {decay}",
                               chunk_size=chunk)
    assert all(g is None or g.dtype == torch.float32 for g in got)


@pytest.mark.parametrize("gate", ["scalar", "channel"])
@pytest.mark.parametrize("span", [float("inf"), -1.0])
def test_both_pairwise_decay_paths_match_naive(gate, span, monkeypatch):
    """The factorised path forced on (span bound inf) and off (-1) for the same mild decay."""
    monkeypatch.setattr(chunk_module, "MAX_FACTORISED_SPAN", span)
    inputs = make_inputs(1, 70, 2, 8, 8, gate, decay=1.0, seed=11)
    assert_matches_naive(delta_rule_chunked, inputs, f"{gate} span bound {span}", chunk_size=32)


def hand_backward(q, k, v, beta, *, log_a=None, scale=1.0, chunk_size=64, initial_state=None,
                  output_final_state=False):
    """The chunked form through chunk._DeltaRuleChunked: its hand-derived backward (the one the
    custom op of op.py runs) instead of autograd."""
    o, final = chunk_module._DeltaRuleChunked.apply(q, k, v, beta, log_a, initial_state, scale,
                                                   chunk_size)
    return (o, final) if output_final_state else o


@pytest.mark.parametrize("T,chunk,gate,decay", CHUNKED_CASES)
def test_hand_backward_matches_naive(T, chunk, gate, decay):
    inputs = make_inputs(2, T, 2, 16, 8, gate, decay=decay, seed=T)
    assert_matches_naive(hand_backward, inputs, f"T={T} C={chunk} {gate} {decay}",
                         chunk_size=chunk)


@pytest.mark.parametrize("gate", ["scalar", "channel"])
@pytest.mark.parametrize("span", [float("inf"), -1.0])
def test_hand_backward_both_decay_paths(gate, span, monkeypatch):
    monkeypatch.setattr(chunk_module, "MAX_FACTORISED_SPAN", span)
    inputs = make_inputs(1, 70, 2, 8, 8, gate, decay=1.0, seed=11)
    assert_matches_naive(hand_backward, inputs, f"{gate} span bound {span}", chunk_size=32)


def test_hand_backward_half_precision_and_no_initial_state():
    inputs = make_inputs(1, 90, 2, 16, 16, "channel", dtype=torch.bfloat16, seed=2, initial=False)
    got = assert_matches_naive(hand_backward, inputs, "bf16 no s0", out_tol=HALF_OUT_TOL,
                               grad_tol=HALF_GRAD_TOL, chunk_size=32)
    for x, gx in zip(inputs, got[2:]):
        assert x is None or gx.dtype == x.dtype


def test_decay_paths_are_chosen_by_span():
    g_weak = torch.cumsum(-0.5 * torch.rand(1, 2, 64, 4), dim=-2)
    g_strong = torch.cumsum(-8.0 * torch.rand(1, 2, 64, 4), dim=-2)
    assert max_chunk_span(g_weak) <= MAX_FACTORISED_SPAN < max_chunk_span(g_strong)


@pytest.mark.parametrize(
    "dtype,T,chunk,gate,decay",
    [
        (torch.float16, 65, 16, "channel", 0.5),
        (torch.float16, 200, 64, "none", 0.5),
        (torch.bfloat16, 63, 32, "scalar", 0.5),
        (torch.bfloat16, 150, 64, "channel", 8.0),
    ],
)
def test_half_precision_chunked(dtype, T, chunk, gate, decay):
    """Half inputs are computed in float32: against the float64 reference on the same
    (half-rounded) inputs, the error is the output rounding, not half-precision accumulation."""
    inputs = make_inputs(1, T, 2, 16, 16, gate, decay=decay, dtype=dtype, seed=T)
    got = assert_matches_naive(delta_rule_chunked, inputs, f"{dtype} T={T} {gate}",
                               out_tol=HALF_OUT_TOL, grad_tol=HALF_GRAD_TOL, chunk_size=chunk)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    for x, gx in zip(inputs, got[2:]):
        assert x is None or gx.dtype == x.dtype


@pytest.mark.parametrize("gate", GATES)
def test_chunked_prefill_then_step_decode(gate):
    q, k, v, beta, log_a, s0 = (None if x is None else x.detach()
                                for x in make_inputs(2, 90, 2, 8, 4, gate, seed=5))
    want = delta_rule_naive(*(x.double() for x in (q, k, v, beta)), scale=0.3,
                            log_a=None if log_a is None else log_a.double(),
                            initial_state=s0.double())
    prefill = 70
    o_pre, state = delta_rule(q[:, :prefill], k[:, :prefill], v[:, :prefill], beta[:, :prefill],
                              log_a=None if log_a is None else log_a[:, :prefill], scale=0.3,
                              initial_state=s0, output_final_state=True, chunk_size=32)
    steps = [o_pre]
    for t in range(prefill, 90):
        o_t, state = delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], state, scale=0.3,
                                     log_a_t=None if log_a is None else log_a[:, t])
        steps.append(o_t[:, None])
    assert_close_rmse(torch.cat(steps, dim=1), want, FP32_TOL, f"{gate} prefill + decode")


@pytest.mark.parametrize("gate,decay", [
    ("none", 0.0),
    ("channel", 5.0),
    pytest.param("scalar", 5.0, marks=pytest.mark.slow),
    pytest.param("channel", 0.0, marks=pytest.mark.slow),
])
def test_long_sequence_is_finite(gate, decay):
    """T = 65,536 in float32, with strong decay and without: outputs, state, all gradients
    finite; without decay the last outputs match the float64 recurrence continued from the
    float32 state at T - 64 (no drift visible at the end of the sequence)."""
    T = 65536
    q, k, v, beta, log_a, _ = make_inputs(1, T, 1, 8, 8, gate, decay=decay, initial=False)
    o, state = delta_rule_chunked(q, k, v, beta, log_a=log_a, scale=0.5, output_final_state=True)
    (o.sum() + state.sum()).backward()
    for name, x in [("o", o), ("state", state), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad),
                    ("dbeta", beta.grad), ("dlog_a", None if log_a is None else log_a.grad)]:
        assert x is None or torch.isfinite(x).all(), f"{name} has inf/NaN ({gate}, {decay})"
    _, middle = delta_rule_chunked(*(x[:, : T - 64].detach() for x in (q, k, v, beta)),
                                   log_a=None if log_a is None else log_a[:, : T - 64].detach(),
                                   output_final_state=True)
    tail = [x[:, T - 64 :].detach().double() for x in (q, k, v, beta)]
    want = delta_rule_naive(*tail, scale=0.5, initial_state=middle.double(),
                            log_a=None if log_a is None else log_a[:, T - 64 :].detach().double())
    assert rel_rmse(o[:, T - 64 :], want) < FP32_TOL


def test_tolerance_check_rejects_a_perturbed_output():
    inputs = [None if x is None else x.detach() for x in make_inputs(1, 65, 2, 8, 8, "channel")]
    q, k, v, beta, log_a, s0 = inputs
    want = delta_rule_naive(*(x.double() for x in (q, k, v, beta)), log_a=log_a.double(),
                            initial_state=s0.double())
    got = delta_rule_chunked(q, k, v, beta, log_a=log_a, initial_state=s0, chunk_size=16)
    assert_close_rmse(got, want, FP32_TOL, "unperturbed")
    perturbed = got.clone()
    perturbed[0, 40, 1, 3] += 1e-3 * want.norm()
    with pytest.raises(AssertionError, match="relative RMSE"):
        assert_close_rmse(perturbed, want, FP32_TOL, "perturbed")
    # a dropped initial state, and the gate applied after the delta update instead of before
    no_state = delta_rule_chunked(q, k, v, beta, log_a=log_a, chunk_size=16)
    with pytest.raises(AssertionError):
        assert_close_rmse(no_state, want, FP32_TOL, "no initial state")
    gate_after = gate_after_update(q, k, v, beta, log_a, s0)
    with pytest.raises(AssertionError):
        assert_close_rmse(gate_after, want, FP32_TOL, "gate after the delta update")


def gate_after_update(q, k, v, beta, log_a, s0):
    """The near miss S_t = diag(alpha_t) ((I - b k k^T) S_{t-1} + b k v^T): gate last."""
    S, outputs = s0.double(), []
    for t in range(q.shape[1]):
        k_t, b_t = k[:, t].double(), beta[:, t].double()[..., None]
        u = b_t * (v[:, t].double() - torch.einsum("bhn,bhnp->bhp", k_t, S))
        S = torch.exp(log_a[:, t].double())[..., None] * (S + k_t[..., None] * u[..., None, :])
        outputs.append(torch.einsum("bhn,bhnp->bhp", q[:, t].double(), S))
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize("backend", ["auto", "torch", "cpu", "naive", "recurrent"])
def test_dispatch_backends_agree(backend):
    q, k, v, beta, log_a, s0 = (x.detach() for x in make_inputs(1, 33, 2, 4, 4, "scalar"))
    want = delta_rule_naive(q, k, v, beta, log_a=log_a, initial_state=s0)
    got = delta_rule(q, k, v, beta, log_a=log_a, initial_state=s0, backend=backend,
                     chunk_size=16)
    assert_close_rmse(got, want, FP32_TOL, backend)


def test_unknown_backend_is_rejected():
    q, k, v, beta, _, _ = (None if x is None else x.detach()
                           for x in make_inputs(1, 4, 1, 2, 2, "none"))
    with pytest.raises(ValueError, match="backend"):
        delta_rule(q, k, v, beta, backend="cuda")


@pytest.mark.parametrize(
    "shapes,message",
    [
        ({"k": (1, 8, 3, 5)}, "k: expected axis N (dim 3) of size 4"),
        ({"v": (1, 7, 3, 2)}, "v: expected axis T"),
        ({"beta": (1, 8, 2)}, "beta: expected axis H"),
        ({"beta": (1, 8, 3, 1)}, "beta: expected 3 dims"),
        ({"log_a": (1, 8, 3, 5)}, "log_a: expected axis N"),
        ({"log_a": (1, 8)}, "log_a: expected 3 or 4 dims"),
        ({"s0": (1, 3, 4, 3)}, "initial_state: expected axis P"),
    ],
)
def test_shape_errors_name_tensor_axis_and_size(shapes, message):
    sizes = {"q": (1, 8, 3, 4), "k": (1, 8, 3, 4), "v": (1, 8, 3, 2), "beta": (1, 8, 3),
             "log_a": (1, 8, 3, 4), "s0": (1, 3, 4, 2)}
    sizes.update(shapes)
    t = {name: torch.zeros(shape) for name, shape in sizes.items()}
    for fn in (delta_rule, delta_rule_naive, delta_rule_chunked, delta_rule_recurrent):
        with pytest.raises(ValueError, match=re.escape(message)):
            fn(t["q"], t["k"], t["v"], t["beta"], log_a=t["log_a"], initial_state=t["s0"])


# ---- agreement with flash-linear-attention's references (optional peer) ----------------------


def fla_reference(gate):
    """fla's recurrent reference for this gate as fn(q, k, v, beta, log_a, scale, s0) -> (o, S)
    in our [B, T, H, D] layout, or skip the test when fla-core is not installed."""
    pytest.importorskip("fla", reason="fla-core is not installed (pip install fla-core einops)")
    if gate == "none":
        from fla.ops.delta_rule.naive import delta_rule_recurrence

        def run(q, k, v, beta, log_a, scale, s0):  # scales q by N**-0.5 itself; [B, H, T, D]
            assert scale == q.shape[-1] ** -0.5
            heads_first = [x.transpose(1, 2).contiguous() for x in (q, k, v, beta)]
            o, S = delta_rule_recurrence(*heads_first, initial_state=s0, output_final_state=True)
            return o.transpose(1, 2), S

        return run
    if gate == "scalar":
        from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

        return lambda q, k, v, beta, log_a, scale, s0: naive_recurrent_gated_delta_rule(
            q, k, v, beta, log_a, scale=scale, initial_state=s0, output_final_state=True)
    from fla.ops.kda.naive import naive_recurrent_kda

    return lambda q, k, v, beta, log_a, scale, s0: naive_recurrent_kda(
        q, k, v, log_a, beta, scale=scale, initial_state=s0, output_final_state=True)


@pytest.mark.parametrize("gate", GATES)
def test_agrees_with_fla_references(gate):
    """Ours (chunked, fp32) against fla's recurrent reference (fp32), outputs, final state and
    gradients, at N = 16 so that fla's fixed N**-0.5 query scale applies to all three."""
    reference = fla_reference(gate)
    N = 16
    inputs = make_inputs(2, 100, 2, N, 8, gate, decay=1.0, seed=21)
    want = outputs_and_grads(lambda q, k, v, beta, log_a, initial_state, output_final_state,
                             **kw: reference(q, k, v, beta, log_a, N**-0.5, initial_state),
                             inputs)
    fresh = [None if x is None else x.detach().requires_grad_() for x in inputs]
    got = outputs_and_grads(delta_rule_chunked, fresh, scale=N**-0.5, chunk_size=32)
    for name, g, w in zip(NAMES, got, want):
        if w is not None:
            assert_close_rmse(g, w, FP32_TOL, f"fla {gate} {name}")
