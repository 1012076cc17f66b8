"""SSD forms (naive, recurrent, chunked) against the naive reference: outputs and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from anatomy.kernels import (
    segment_sum,
    ssd,
    ssd_chunked,
    ssd_chunked_cpu,
    ssd_naive,
    ssd_recurrent,
    ssd_step,
)
from anatomy.kernels.ssd import auto_backend, cpu_chunk, cpu_kernel_available
from anatomy.kernels.ssd import chunk as chunk_module
from anatomy.kernels.ssd.chunk import MAX_FACTORISED_SPAN, max_chunk_span
from kernel_checks import (
    FP32_TOL,
    HALF_GRAD_TOL,
    HALF_OUT_TOL,
    assert_close_rmse,
    make_inputs,
    outputs_and_grads,
    rel_rmse,
)

NAMES = ["y", "final_state", "dq", "dk", "dv", "dlog_a", "dinitial_state"]


def assert_matches_naive(fn, inputs, label, *, scale=0.5, **kwargs):
    """fn's output, final state and gradients against the float64 naive reference, to the fp32
    tolerance; returns fn's [y, S, grads...]."""
    ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
    want = outputs_and_grads(ssd_naive, ref_inputs, scale=scale)
    got = outputs_and_grads(fn, inputs, scale=scale, **kwargs)
    for name, g, w in zip(NAMES, got, want):
        assert_close_rmse(g, w, FP32_TOL, f"{label} {name}")
    return got


def double_loop_ssd(q, k, v, log_a, scale, s0):
    """The definition, term by term, in float64: independent of every kernel in the package."""
    q, k, v, log_a, s0 = (x.detach().double() for x in (q, k, v, log_a, s0))
    B, T, G, _N = q.shape
    H, P = v.shape[2], v.shape[3]
    y = torch.zeros(B, T, H, P, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            g = h // (H // G)
            for t in range(T):
                for s in range(t + 1):
                    decay = torch.exp(log_a[b, s + 1 : t + 1, h].sum())
                    y[b, t, h] += scale * decay * torch.dot(q[b, t, g], k[b, s, g]) * v[b, s, h]
                decay0 = torch.exp(log_a[b, : t + 1, h].sum())
                y[b, t, h] += scale * decay0 * (q[b, t, g] @ s0[b, h])
    return y


@pytest.mark.parametrize("G", [1, 2, 4])
def test_naive_matches_double_loop(G):
    q, k, v, log_a, s0 = make_inputs(2, 7, G, 4, 3, 2, dtype=torch.float64, seed=G)
    want = double_loop_ssd(q, k, v, log_a, 0.7, s0)
    got = ssd_naive(q, k, v, log_a, scale=0.7, initial_state=s0)
    assert rel_rmse(got, want) < 1e-12
    # Final state: S_T by the recurrence written out longhand.
    _, state = ssd_naive(q, k, v, log_a, initial_state=s0, output_final_state=True)
    R = 4 // G
    S = s0.detach().clone()
    for t in range(7):
        kh = k[:, t].detach().repeat_interleave(R, 1)
        S = torch.exp(log_a[:, t].detach())[..., None, None] * S + kh[..., None] * v[:, t, :, None]
    assert rel_rmse(state, S) < 1e-12


def test_segment_sum_is_log_space_cumsum_difference():
    x = -torch.rand(2, 5, dtype=torch.float64)
    seg = segment_sum(x)
    for t in range(5):
        for s in range(5):
            want = x[:, s + 1 : t + 1].sum(-1) if s <= t else torch.full((2,), float("-inf"))
            torch.testing.assert_close(seg[:, t, s], want.double())


needs_cpu_kernel = pytest.mark.skipif(
    not cpu_kernel_available(), reason="the C++ CPU kernel did not build (see its warning)"
)

# (form, T, chunk, G, decay): every T, every chunk size, every G and both chunked paths
# (factorised decay for small in-chunk spans, exact masked-exp decay for large ones) appear,
# for the PyTorch ("chunked") and the C++ ("cpu") chunked kernels alike.
CHUNKED_CASES = [
    ("chunked", 1, 16, 1, 0.5),
    ("chunked", 63, 16, 2, 0.5),
    ("chunked", 64, 32, 4, 0.5),
    ("chunked", 65, 64, 1, 0.5),
    ("chunked", 65, 16, 4, 8.0),
    ("chunked", 500, 128, 2, 0.5),
    ("chunked", 500, 32, 1, 5.0),
    ("chunked", 1000, 64, 4, 0.5),
    ("chunked", 2048, 128, 1, 0.5),
    ("chunked", 2048, 64, 2, 0.1),
]
FP32_CASES = CHUNKED_CASES + [
    pytest.param("cpu", *case[1:], marks=needs_cpu_kernel) for case in CHUNKED_CASES
] + [
    ("recurrent", 1, 16, 1, 0.5),
    ("recurrent", 63, 16, 2, 0.5),
    ("recurrent", 65, 16, 4, 0.5),
    ("recurrent", 500, 16, 1, 0.5),
]
FORMS = {"chunked": ssd_chunked, "cpu": ssd_chunked_cpu, "recurrent": ssd_recurrent}


@pytest.mark.parametrize("form,T,chunk,G,decay", FP32_CASES)
def test_fp32_forms_match_naive(form, T, chunk, G, decay):
    inputs = make_inputs(1, T, G, 4, 16, 16, decay=decay, seed=T + G)
    kwargs = {"chunk_size": chunk} if form != "recurrent" else {}
    got = assert_matches_naive(FORMS[form], inputs, f"{form} T={T} Q={chunk} G={G}", **kwargs)
    assert all(g.dtype == torch.float32 for g in got)


@pytest.mark.parametrize(
    "G,decay,block_steps", [(1, 0.5, 32), (2, 0.5, 32), (2, 8.0, 32), (2, 0.5, 16), (1, 8.0, 16)]
)
def test_chunked_across_many_blocks(G, decay, block_steps, monkeypatch):
    """Blocks of 2 chunks of 16 steps: T = 100 is 7 chunks in 4 blocks (one zero-padded chunk),
    so states cross block boundaries and the last block is ragged; blocks of one chunk (7 blocks)
    too; both decay paths, B = 2."""
    monkeypatch.setattr(chunk_module, "BLOCK_STEPS", block_steps)
    inputs = make_inputs(2, 100, G, 4, 8, 8, decay=decay, seed=G)
    assert_matches_naive(ssd_chunked, inputs, f"blocks of {block_steps} G={G} decay={decay}",
                         chunk_size=16)


@needs_cpu_kernel
@pytest.mark.parametrize("G,decay", [(1, 0.5), (2, 0.5), (4, 8.0), (2, 3.0)])
def test_cpu_kernel_batches_groups_and_ragged_chunks(G, decay):
    """B = 2 sequences of 7 chunks (the last one ragged) over H = 4 heads in G groups: the
    kernel's tasks are (batch, head) pairs; decay 3.0 mixes factorised and exact chunks."""
    inputs = make_inputs(2, 100, G, 4, 8, 8, decay=decay, seed=G)
    assert_matches_naive(ssd_chunked_cpu, inputs, f"cpu B=2 G={G} decay={decay}", chunk_size=16)


@needs_cpu_kernel
@pytest.mark.parametrize(
    "B,H,G,threads",
    [
        (2, 4, 1, 3),  # a middle range ends one group and starts the next: two partial sums
        (1, 8, 1, 4),  # one group split over four ranges
        (2, 6, 3, 4),  # split and whole groups side by side
        (1, 4, 1, 8),  # more threads than (batch, head) tasks
    ],
)
def test_cpu_kernel_sums_key_groups_across_thread_ranges(B, H, G, threads):
    """The backward sums dq, dk over each key group's heads itself; heads of one group that
    fall in different threads' ranges meet in per-range partial sums, added up at the end."""
    inputs = make_inputs(B, 70, G, H, 8, 8, decay=3.0, seed=H + threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert_matches_naive(ssd_chunked_cpu, inputs, f"cpu B={B} H={H} G={G} threads={threads}",
                             chunk_size=16)
    finally:
        torch.set_num_threads(before)


@needs_cpu_kernel
@pytest.mark.parametrize("decay", [0.5, 8.0])
def test_cpu_kernel_rows_off_the_vector_width(decay):
    """N = 24, P = 20: rows that are not whole 16-float vectors (vector loops with scalar tails)
    and that start off 64-byte boundaries (the output rows the kernel streams fall back to plain
    stores); the state-sized dot has a tail too (N P = 480)."""
    inputs = make_inputs(2, 70, 2, 4, 24, 20, decay=decay, seed=5)
    assert_matches_naive(ssd_chunked_cpu, inputs, f"cpu N=24 P=20 decay={decay}", chunk_size=32)


@pytest.mark.parametrize("form", ["chunked", pytest.param("cpu", marks=needs_cpu_kernel)])
def test_chunked_with_growing_and_decaying_steps(form):
    """log_a of both signs (8 steps near -6, then 8 near +4, per chunk of 16): in-chunk cumsums
    are not monotone and spread past the factorised bound, so the exact path runs without its
    early stop for decaying rows."""
    q, k, v, _, s0 = make_inputs(1, 64, 2, 4, 8, 8, seed=7)
    gen = torch.Generator().manual_seed(7)
    sign = torch.tensor([-6.0] * 8 + [4.0] * 8).repeat(4)[None, :, None]
    log_a = (sign * (1 + 0.1 * torch.rand(1, 64, 4, generator=gen))).requires_grad_()
    assert max_chunk_span(log_a.detach(), 16) > MAX_FACTORISED_SPAN
    inputs = [q, k, v, log_a, s0]
    assert_matches_naive(FORMS[form], inputs, f"{form} mixed-sign log_a", chunk_size=16)


def test_both_chunked_decay_paths_are_exercised():
    weak = make_inputs(1, 128, 1, 1, 2, 2, decay=0.5)[3]
    strong = make_inputs(1, 128, 1, 1, 2, 2, decay=8.0)[3]
    assert max_chunk_span(weak.detach(), 64) <= MAX_FACTORISED_SPAN
    assert max_chunk_span(strong.detach(), 64) > MAX_FACTORISED_SPAN


@pytest.mark.parametrize(
    "dtype,T,chunk,G,decay",
    [
        (torch.float16, 65, 16, 1, 0.5),
        (torch.float16, 500, 64, 4, 0.5),
        (torch.float16, 1000, 128, 2, 4.0),
        (torch.bfloat16, 63, 32, 2, 0.5),
        (torch.bfloat16, 2048, 64, 1, 0.5),
        (torch.bfloat16, 500, 16, 4, 8.0),
    ],
)
@pytest.mark.parametrize("form", ["chunked", pytest.param("cpu", marks=needs_cpu_kernel)])
def test_half_precision_chunked(form, dtype, T, chunk, G, decay):
    inputs = make_inputs(1, T, G, 4, 16, 16, dtype=dtype, decay=decay, seed=T)
    ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
    want = outputs_and_grads(ssd_naive, ref_inputs)
    got = outputs_and_grads(FORMS[form], inputs, chunk_size=chunk)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    for name, g, w in zip(NAMES, got, want):
        tol = HALF_OUT_TOL if name in ("y", "final_state") else HALF_GRAD_TOL
        assert_close_rmse(g, w, tol, f"{dtype} T={T} Q={chunk} G={G} {name}")
    for x, gx in zip(inputs, got[2:]):
        assert gx.dtype == x.dtype


def test_tolerance_check_rejects_a_perturbed_output():
    q, k, v, log_a, s0 = make_inputs(1, 65, 2, 4, 8, 8)
    want = ssd_naive(q.double(), k.double(), v.double(), log_a.double(), initial_state=s0.double())
    got = ssd_chunked(q, k, v, log_a, initial_state=s0, chunk_size=16).detach()
    assert_close_rmse(got, want, FP32_TOL, "unperturbed")
    perturbed = got.clone()
    perturbed[0, 40, 1, 3] += 1e-3 * want.norm()  # one entry off: rel RMSE 1e-3
    with pytest.raises(AssertionError, match="relative RMSE"):
        assert_close_rmse(perturbed, want, FP32_TOL, "perturbed")
    # A dropped initial-state contribution is caught as well.
    no_state = ssd_chunked(q, k, v, log_a, chunk_size=16).detach()
    with pytest.raises(AssertionError):
        assert_close_rmse(no_state, want, FP32_TOL, "no initial state")


@pytest.mark.parametrize("G", [1, 4])
def test_chunked_prefill_then_recurrent_decode(G):
    q, k, v, log_a, s0 = (x.detach() for x in make_inputs(2, 150, G, 4, 8, 8, seed=G))
    want = ssd_naive(q.double(), k.double(), v.double(), log_a.double(), scale=0.3,
                     initial_state=s0.double())
    prefill = 100
    y_pre, state = ssd(q[:, :prefill], k[:, :prefill], v[:, :prefill], log_a[:, :prefill],
                       scale=0.3, initial_state=s0, output_final_state=True, chunk_size=32)
    steps = [y_pre]
    for t in range(prefill, 150):
        y_t, state = ssd_step(q[:, t], k[:, t], v[:, t], log_a[:, t], state, scale=0.3)
        steps.append(y_t[:, None])
    assert_close_rmse(torch.cat(steps, dim=1), want, FP32_TOL, "prefill + decode")


@pytest.mark.parametrize("form", ["chunked", pytest.param("cpu", marks=needs_cpu_kernel)])
@pytest.mark.parametrize("log_a_value", [-5.0, 0.0])
def test_long_sequence_is_finite(form, log_a_value):
    T = 65536
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, T, 1, 4, generator=gen, requires_grad=True)
    k = torch.randn(1, T, 1, 4, generator=gen, requires_grad=True)
    v = torch.randn(1, T, 2, 4, generator=gen, requires_grad=True)
    log_a = torch.full((1, T, 2), log_a_value, requires_grad=True)
    y, state = FORMS[form](q, k, v, log_a, scale=0.5, output_final_state=True)
    (y.sum() + state.sum()).backward()
    for name, x in [("y", y), ("state", state), ("dq", q.grad), ("dk", k.grad),
                    ("dv", v.grad), ("dlog_a", log_a.grad)]:
        assert torch.isfinite(x).all(), f"{name} has inf/NaN at log_a={log_a_value}"
    if log_a_value == 0.0:  # causal linear attention: y_t = q_t . (sum_{s<=t} k_s^T v_s)
        cum = torch.cumsum(k.detach()[..., None] * v.detach()[:, :, :, None, :], dim=1)
        want = 0.5 * torch.einsum("btn,bthnp->bthp", q.detach()[:, :, 0], cum)
        assert rel_rmse(y[:, -64:], want[:, -64:]) < 1e-4


@pytest.mark.parametrize(
    "backend", ["auto", "torch", pytest.param("cpu", marks=needs_cpu_kernel), "naive", "recurrent"]
)
def test_dispatch_backends_agree(backend):
    q, k, v, log_a, s0 = (x.detach() for x in make_inputs(1, 33, 2, 4, 4, 4))
    want = ssd_naive(q, k, v, log_a, initial_state=s0)
    got = ssd(q, k, v, log_a, initial_state=s0, backend=backend, chunk_size=16)
    assert_close_rmse(got, want, FP32_TOL, backend)


@needs_cpu_kernel
def test_auto_backend_choice_and_fallback(monkeypatch):
    q, k, v, log_a = (x.detach() for x in make_inputs(1, 8, 1, 2, 4, 4, initial=False))
    assert auto_backend(q, k, v, log_a, None) == "cpu"
    assert auto_backend(q.double(), k.double(), v.double(), log_a.double(), None) == "torch"
    # the kernel switched off (or failing to build): "auto" falls back to PyTorch chunked, and
    # asking for "cpu" explicitly says why it cannot
    monkeypatch.setenv("ANATOMY_CPU_KERNEL", "0")
    cpu_chunk._extension.cache_clear()
    try:
        assert auto_backend(q, k, v, log_a, None) == "torch"
        with pytest.raises(RuntimeError, match="unavailable"):
            ssd(q, k, v, log_a, backend="cpu")
    finally:
        monkeypatch.delenv("ANATOMY_CPU_KERNEL")
        cpu_chunk._extension.cache_clear()
    assert auto_backend(q, k, v, log_a, None) == "cpu"


def test_retention_and_linear_attention_are_special_cases():
    q, k, v, _, _ = (x.detach().double() for x in make_inputs(1, 20, 2, 2, 3, 3))
    gamma = 0.9
    log_a = torch.full((1, 20, 2), math.log(gamma), dtype=torch.float64)
    t = torch.arange(20.0, dtype=torch.float64)
    retention = (gamma ** (t[:, None] - t[None, :])).tril()
    scores = torch.einsum("thn,shn->hts", q[0], k[0])
    want = torch.einsum("hts,shp->thp", retention * scores, v[0])
    assert rel_rmse(ssd_chunked(q, k, v, log_a, chunk_size=8)[0], want) < 1e-12
    zero = torch.zeros_like(log_a)
    want_linear = torch.einsum("hts,shp->thp", scores.tril(), v[0])
    assert rel_rmse(ssd_chunked(q, k, v, zero, chunk_size=8)[0], want_linear) < 1e-12


@pytest.mark.parametrize(
    "shapes,message",
    [
        ({"v": (1, 8, 8, 4)}, "v: expected H divisible by G=3 but H=8"),
        ({"k": (1, 8, 3, 5)}, "k: expected axis N"),
        ({"log_a": (1, 7, 6)}, "log_a: expected axis T"),
        ({"log_a": (1, 8, 5)}, "log_a: expected axis H"),
        ({"q": (8, 3, 4)}, "q: expected 4 dims"),
        ({"s0": (1, 6, 4, 3)}, "initial_state: expected axis P"),
    ],
)
def test_shape_errors_name_tensor_axis_and_size(shapes, message):
    sizes = {
        "q": (1, 8, 3, 4),
        "k": (1, 8, 3, 4),
        "v": (1, 8, 6, 4),
        "log_a": (1, 8, 6),
        "s0": (1, 6, 4, 4),
    }
    sizes.update(shapes)
    t = {name: torch.zeros(shape) for name, shape in sizes.items()}
    for fn in (ssd, ssd_naive, ssd_chunked, ssd_chunked_cpu, ssd_recurrent):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            fn(t["q"], t["k"], t["v"], t["log_a"], initial_state=t["s0"])


def test_unknown_backend_is_rejected():
    q, k, v, log_a = (x.detach() for x in make_inputs(1, 4, 1, 1, 2, 2, initial=False))
    with pytest.raises(ValueError, match="backend"):
        ssd(q, k, v, log_a, backend="cuda")

