"""GLA forms (per-channel decay, RWKV-6 bonus) against references written from the equations:
a float64 double loop, the quadratic naive form, the recurrence, and (when installed) fla's
pure-PyTorch recurrent references."""

from __future__ import annotations

import pytest
import torch
from anatomy.kernels import gla, gla_chunked, gla_naive, gla_recurrent, gla_step, ssd_naive
from anatomy.kernels.gla import auto_backend, cpu_kernel_available, gla_chunked_cpu
from anatomy.kernels.gla import cpu_chunk as cpu_chunk_module
from anatomy.kernels.gla.chunk import MAX_SUB_SPAN, sub_block_size
from kernel_checks import FP32_TOL, HALF_GRAD_TOL, HALF_OUT_TOL, assert_close_rmse, rel_rmse

NAMES = ["y", "final_state", "dq", "dk", "dv", "dlog_alpha", "dinitial_state", "dbonus"]


def make_gla_inputs(B, T, G, H, N, P, *, dtype=torch.float32, decay=1.0, seed=0, bonus=False):
    """q, k [B,T,G,N]; v [B,T,H,P]; log_alpha = -decay * U(0,1) [B,T,H,N] (each channel its own
    decay); initial_state [B,H,N,P]; bonus [H,N] or None."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, G, N, generator=gen) / N**0.5
    k = torch.randn(B, T, G, N, generator=gen)
    v = torch.randn(B, T, H, P, generator=gen)
    log_alpha = -decay * torch.rand(B, T, H, N, generator=gen)
    s0 = torch.randn(B, H, N, P, generator=gen)
    u = torch.randn(H, N, generator=gen)
    tensors = [q, k, v, log_alpha, s0] + ([u] if bonus else [])
    return [t.to(dtype).requires_grad_() for t in tensors]


def outputs_and_grads(fn, inputs, **kwargs):
    """fn's [y, final state, gradients of every input] for a fixed random dense cotangent."""
    q, k, v, log_alpha, s0, *rest = inputs
    bonus = rest[0] if rest else None
    y, state = fn(q, k, v, log_alpha, initial_state=s0, output_final_state=True, bonus=bonus,
                  **kwargs)
    gen = torch.Generator().manual_seed(123)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    ds = torch.randn(state.shape, generator=gen, dtype=torch.float64)
    loss = (y.double() * dy).sum() + (state.double() * ds).sum()
    return [y, state, *torch.autograd.grad(loss, inputs)]


def assert_matches_naive(fn, inputs, label, *, scale=0.5, **kwargs):
    """fn's output, final state and gradients against the float64 naive reference, to the fp32
    tolerance."""
    ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
    want = outputs_and_grads(gla_naive, ref_inputs, scale=scale)
    got = outputs_and_grads(fn, inputs, scale=scale, **kwargs)
    for name, g, w in zip(NAMES, got, want):
        assert_close_rmse(g, w, FP32_TOL, f"{label} {name}")
    return got


def double_loop_gla(q, k, v, log_alpha, scale, s0, u=None):
    """The definition, term by term, in float64: y_t = scale sum_{s<=t} sum_n q_tn k_sn
    prod_{i=s+1..t} alpha_in v_s (+ the initial state); with the bonus u the sum runs over s < t
    with the decay prod_{i=s+1..t-1}, plus scale (q_t * u * k_t) . v_t."""
    q, k, v, log_alpha, s0 = (x.detach().double() for x in (q, k, v, log_alpha, s0))
    alpha = torch.exp(log_alpha)
    B, T, G, _ = q.shape
    H, P = v.shape[2], v.shape[3]
    y = torch.zeros(B, T, H, P, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            g = h // (H // G)
            for t in range(T):
                last = t if u is None else t - 1  # the last step whose decay the query sees
                for s in range(last + 1):
                    decay = alpha[b, s + 1 : last + 1, h].prod(0)  # [N]
                    y[b, t, h] += scale * (q[b, t, g] * decay * k[b, s, g]).sum() * v[b, s, h]
                decay0 = alpha[b, : last + 1, h].prod(0)
                y[b, t, h] += scale * (q[b, t, g] * decay0) @ s0[b, h]
                if u is not None:
                    bonus = (q[b, t, g] * u[h].detach().double() * k[b, t, g]).sum()
                    y[b, t, h] += scale * bonus * v[b, t, h]
    return y


@pytest.mark.parametrize("G,bonus", [(1, False), (2, False), (4, False), (1, True), (2, True)])
def test_naive_matches_double_loop(G, bonus):
    q, k, v, log_alpha, s0, *u = make_gla_inputs(2, 7, G, 4, 3, 2, dtype=torch.float64, seed=G,
                                                 bonus=bonus)
    u = u[0] if u else None
    want = double_loop_gla(q, k, v, log_alpha, 0.7, s0, u)
    got = gla_naive(q, k, v, log_alpha, scale=0.7, initial_state=s0, bonus=u)
    assert rel_rmse(got, want) < 1e-12
    # final state: the recurrence S_t = diag(alpha_t) S_{t-1} + k_t v_t^T written out longhand
    _, state = gla_naive(q, k, v, log_alpha, initial_state=s0, output_final_state=True, bonus=u)
    S = s0.detach().clone()
    for t in range(7):
        kh = k[:, t].detach().repeat_interleave(4 // G, 1)
        S = torch.exp(log_alpha[:, t].detach())[..., None] * S + kh[..., None] * v[:, t, :, None]
    assert rel_rmse(state, S) < 1e-12


@pytest.mark.parametrize("bonus", [False, True])
@pytest.mark.parametrize("G", [1, 4])
def test_recurrent_matches_naive_with_gradients(G, bonus):
    inputs = make_gla_inputs(2, 20, G, 4, 5, 3, dtype=torch.float64, decay=2.0, seed=G,
                             bonus=bonus)
    want = outputs_and_grads(gla_naive, inputs, scale=0.3)
    got = outputs_and_grads(gla_recurrent, inputs, scale=0.3)
    for name, g, w in zip(NAMES, got, want):
        assert rel_rmse(g, w) < 1e-12, name


# (T, chunk, G, decay, bonus): ragged and whole T, every chunk size, G dividing H, weak and
# strong per-channel decays (strong ones force smaller sub-blocks), with and without the bonus.
CHUNKED_CASES = [
    (1, 16, 1, 1.0, False),
    (63, 16, 2, 1.0, False),
    (64, 32, 4, 1.0, True),
    (65, 64, 1, 1.0, False),
    (65, 16, 4, 8.0, True),
    (100, 24, 2, 3.0, False),
    (130, 64, 2, 30.0, False),
    (130, 64, 1, 30.0, True),
    (300, 128, 2, 0.2, True),
    (300, 64, 1, 10.0, False),
    (257, 32, 4, 0.5, False),
]


needs_cpu_kernel = pytest.mark.skipif(
    not cpu_kernel_available(), reason="the C++ CPU kernel did not build (see its warning)"
)
FORMS = {"chunked": gla_chunked, "cpu": gla_chunked_cpu}
CHUNKED_FORMS = ["chunked", pytest.param("cpu", marks=needs_cpu_kernel)]


@pytest.mark.parametrize("form", CHUNKED_FORMS)
@pytest.mark.parametrize("T,chunk,G,decay,bonus", CHUNKED_CASES)
def test_chunked_matches_naive(form, T, chunk, G, decay, bonus):
    inputs = make_gla_inputs(1, T, G, 4, 16, 16, decay=decay, seed=T + G, bonus=bonus)
    got = assert_matches_naive(FORMS[form], inputs, f"{form} T={T} Q={chunk} G={G} "
                               f"decay={decay} bonus={bonus}", chunk_size=chunk)
    assert all(g.dtype == torch.float32 for g in got)


@pytest.mark.parametrize("form", CHUNKED_FORMS)
@pytest.mark.parametrize("bonus", [False, True])
def test_chunked_batches_and_no_initial_state(form, bonus):
    """B = 3 sequences over H = 4 heads in G = 2 groups, N != P, no initial state: the
    gradients of q, k, v, log_alpha (and the bonus) against the naive reference."""
    q, k, v, log_alpha, _, *u = make_gla_inputs(3, 70, 2, 4, 8, 6, decay=4.0, seed=3,
                                                bonus=bonus)
    leaves = [q, k, v, log_alpha, *u]
    ref_leaves = [x.detach().double().requires_grad_() for x in leaves]
    dy = torch.randn(3, 70, 4, 6, generator=torch.Generator().manual_seed(4))
    results = []
    for fn, xs in ((gla_naive, ref_leaves), (FORMS[form], leaves)):
        y = fn(*xs[:4], scale=0.5, bonus=xs[4] if bonus else None,
               **({} if fn is gla_naive else {"chunk_size": 16}))
        results.append([y, *torch.autograd.grad((y.double() * dy.double()).sum(), xs)])
    for name, g, w in zip(["y", "dq", "dk", "dv", "dlog_alpha", "dbonus"], *results[::-1]):
        assert_close_rmse(g, w, FP32_TOL, f"{form} {name}")


def test_sub_blocks_shrink_with_the_decay():
    """The intra-chunk factors stay within exp(+-MAX_SUB_SPAN / 2): sub-blocks of 16 steps for
    weak decays, smaller ones when a channel decays faster, single steps (always exact) when a
    single step's decay exceeds the bound."""
    weak = -torch.rand(1, 64, 1, 4)
    assert sub_block_size(weak.cumsum(1).transpose(1, 2)) == 16
    strong = torch.full((1, 64, 1, 4), -MAX_SUB_SPAN / 6)  # 7 steps fit, 15 do not
    assert sub_block_size(strong.cumsum(1).transpose(1, 2)) == 4
    huge = torch.full((1, 64, 1, 4), -3 * MAX_SUB_SPAN)
    assert sub_block_size(huge.cumsum(1).transpose(1, 2)) == 1
    for form, fn in FORMS.items():
        if form == "cpu" and not cpu_kernel_available():
            continue
        for bonus in (False, True):
            inputs = make_gla_inputs(1, 40, 1, 2, 4, 4, seed=1, bonus=bonus)
            inputs[3] = torch.full_like(inputs[3], -3 * MAX_SUB_SPAN).requires_grad_()
            ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
            want = outputs_and_grads(gla_naive, ref_inputs, scale=0.5)
            got = outputs_and_grads(fn, inputs, scale=0.5, chunk_size=16)
            for name, g, w in zip(NAMES, got, want):
                if name == "dinitial_state" and not bonus:  # exp(-240 (t + 1)): 0 in float32
                    assert w.abs().max() < 1e-100 and not g.any()
                else:
                    assert_close_rmse(g, w, FP32_TOL, f"{form} bonus={bonus}: {name}")


@pytest.mark.parametrize("form", CHUNKED_FORMS)
@pytest.mark.parametrize("bonus", [False, True])
def test_long_strong_decay_is_finite_and_accurate(form, bonus):
    """log_alpha = -5 at T = 65,536 in float32: outputs and gradients finite, and equal to the
    float64 naive form on windows of 200 steps (the decay e^-5 per step makes anything more than
    40 steps back < e^-200, so the window's edges are dropped from the comparison)."""
    T, W, edge = 65536, 200, 40
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, T, 1, 8, generator=gen) / 8**0.5
    k = torch.randn(1, T, 1, 8, generator=gen)
    v = torch.randn(1, T, 2, 8, generator=gen)
    log_alpha = torch.full((1, T, 2, 8), -5.0)
    u = torch.randn(2, 8, generator=gen) if bonus else None
    dy = torch.randn(1, T, 2, 8, generator=gen)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, log_alpha)]
    y = FORMS[form](*leaves, scale=0.5, bonus=u)
    grads = torch.autograd.grad((y * dy).sum(), leaves)
    names = ["y", "dq", "dk", "dv", "dlog_alpha"]
    for name, x in zip(names, [y, *grads]):
        assert torch.isfinite(x).all(), f"{name} has inf/NaN"
    for start in (1000, T - W):
        window = [x[:, start : start + W].double().requires_grad_() for x in (q, k, v, log_alpha)]
        y_ref = gla_naive(*window, scale=0.5, bonus=None if u is None else u.double())
        grads_ref = torch.autograd.grad((y_ref * dy[:, start : start + W].double()).sum(), window)
        inner = slice(start + edge, start + W - edge)
        for name, g, w in zip(names, [y, *grads], [y_ref, *grads_ref]):
            assert_close_rmse(g[:, inner], w[:, edge:-edge], FP32_TOL, f"{name} at {start}")


@pytest.mark.parametrize("form", CHUNKED_FORMS)
@pytest.mark.parametrize(
    "dtype,T,chunk,G,decay,bonus",
    [
        (torch.float16, 65, 16, 1, 1.0, False),
        (torch.float16, 300, 64, 2, 5.0, True),
        (torch.bfloat16, 63, 32, 2, 1.0, True),
        (torch.bfloat16, 300, 64, 4, 0.2, False),
    ],
)
def test_half_precision_accumulates_in_float32(form, dtype, T, chunk, G, decay, bonus):
    inputs = make_gla_inputs(1, T, G, 4, 16, 16, dtype=dtype, decay=decay, seed=T, bonus=bonus)
    ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
    want = outputs_and_grads(gla_naive, ref_inputs)
    got = outputs_and_grads(FORMS[form], inputs, chunk_size=chunk)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    for name, g, w in zip(NAMES, got, want):
        tol = HALF_OUT_TOL if name in ("y", "final_state") else HALF_GRAD_TOL
        assert_close_rmse(g, w, tol, f"{dtype} T={T} {name}")
    for x, gx in zip(inputs, got[2:]):
        assert gx.dtype == x.dtype


@pytest.mark.parametrize("bonus", [False, True])
def test_chunked_prefill_then_recurrent_decode(bonus):
    q, k, v, log_alpha, s0, *u = (x.detach() for x in make_gla_inputs(
        2, 150, 2, 4, 8, 8, decay=2.0, seed=5, bonus=bonus))
    u = u[0] if u else None
    want = gla_naive(q.double(), k.double(), v.double(), log_alpha.double(), scale=0.3,
                     initial_state=s0.double(), bonus=None if u is None else u.double())
    prefill = 100
    y_pre, state = gla(q[:, :prefill], k[:, :prefill], v[:, :prefill], log_alpha[:, :prefill],
                       scale=0.3, initial_state=s0, output_final_state=True, chunk_size=32,
                       bonus=u)
    steps = [y_pre]
    for t in range(prefill, 150):
        y_t, state = gla_step(q[:, t], k[:, t], v[:, t], log_alpha[:, t], state, 0.3, u)
        steps.append(y_t[:, None])
    assert_close_rmse(torch.cat(steps, dim=1), want, FP32_TOL, "prefill + decode")


def test_scalar_decay_is_ssd():
    """A decay that is the same on every channel is SSD's scalar decay broadcast over n."""
    q, k, v, log_a, s0 = (x.detach().double() for x in make_gla_inputs(1, 90, 2, 4, 6, 5,
                                                                        decay=2.0)[:5])
    scalar = log_a[..., 0]  # [B, T, H]
    want = ssd_naive(q, k, v, scalar, scale=0.5, initial_state=s0, output_final_state=True)
    got = gla_chunked(q, k, v, scalar[..., None].expand_as(log_a), scale=0.5, initial_state=s0,
                      output_final_state=True, chunk_size=32)
    for g, w in zip(got, want):
        assert rel_rmse(g, w) < 1e-12


def test_tolerance_check_rejects_a_dropped_bonus():
    inputs = make_gla_inputs(1, 65, 2, 4, 8, 8, bonus=True)
    q, k, v, log_alpha, s0, u = (x.detach() for x in inputs)
    want = gla_naive(q.double(), k.double(), v.double(), log_alpha.double(),
                     initial_state=s0.double(), bonus=u.double())
    got = gla_chunked(q, k, v, log_alpha, initial_state=s0, bonus=u, chunk_size=16)
    assert_close_rmse(got, want, FP32_TOL, "with the bonus")
    with pytest.raises(AssertionError, match="relative RMSE"):
        no_bonus = gla_chunked(q, k, v, log_alpha, initial_state=s0, chunk_size=16)
        assert_close_rmse(no_bonus, want, FP32_TOL, "bonus dropped")


@pytest.mark.parametrize(
    "backend", ["auto", "torch", pytest.param("cpu", marks=needs_cpu_kernel), "naive", "recurrent"]
)
def test_dispatch_backends_agree(backend):
    q, k, v, log_alpha, s0, u = (x.detach() for x in make_gla_inputs(1, 33, 2, 4, 4, 4,
                                                                     bonus=True))
    want = gla_naive(q, k, v, log_alpha, initial_state=s0, bonus=u)
    got = gla(q, k, v, log_alpha, initial_state=s0, bonus=u, backend=backend, chunk_size=16)
    assert_close_rmse(got, want, FP32_TOL, backend)


@needs_cpu_kernel
def test_auto_backend_choice_and_fallback(monkeypatch):
    q, k, v, log_alpha = (x.detach() for x in make_gla_inputs(1, 8, 1, 2, 4, 4)[:4])
    assert auto_backend(q, k, v, log_alpha) == "cpu"
    assert auto_backend(q.double(), k.double(), v.double(), log_alpha.double()) == "torch"
    # the kernel switched off (or failing to build): "auto" falls back to PyTorch chunked, and
    # asking for "cpu" explicitly says why it cannot
    monkeypatch.setenv("ANATOMY_CPU_KERNEL", "0")
    cpu_chunk_module._extension.cache_clear()
    try:
        assert auto_backend(q, k, v, log_alpha) == "torch"
        with pytest.raises(RuntimeError, match="unavailable"):
            gla(q, k, v, log_alpha, backend="cpu")
    finally:
        monkeypatch.delenv("ANATOMY_CPU_KERNEL")
        cpu_chunk_module._extension.cache_clear()
    assert auto_backend(q, k, v, log_alpha) == "cpu"


def test_unknown_backend_is_rejected():
    q, k, v, log_alpha = (x.detach() for x in make_gla_inputs(1, 4, 1, 1, 2, 2)[:4])
    with pytest.raises(ValueError, match="backend"):
        gla(q, k, v, log_alpha, backend="cuda")


@pytest.mark.parametrize(
    "shapes,message",
    [
        ({"v": (1, 8, 8, 4)}, "v: expected H divisible by G=3 but H=8"),
        ({"k": (1, 8, 3, 5)}, "k: expected axis N"),
        ({"log_alpha": (1, 7, 6, 4)}, "log_alpha: expected axis T"),
        ({"log_alpha": (1, 8, 6, 3)}, "log_alpha: expected axis N"),
        ({"log_alpha": (1, 8, 6)}, "log_alpha: expected 4 dims"),
        ({"s0": (1, 6, 4, 3)}, "initial_state: expected axis P"),
        ({"u": (6, 5)}, "bonus: expected axis N"),
        ({"u": (3, 4)}, "bonus: expected axis H"),
    ],
)
def test_shape_errors_name_tensor_axis_and_size(shapes, message):
    sizes = {"q": (1, 8, 3, 4), "k": (1, 8, 3, 4), "v": (1, 8, 6, 4), "log_alpha": (1, 8, 6, 4),
             "s0": (1, 6, 4, 4), "u": (6, 4)}
    sizes.update(shapes)
    t = {name: torch.zeros(shape) for name, shape in sizes.items()}
    for fn in (gla, gla_naive, gla_chunked, gla_chunked_cpu, gla_recurrent):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            fn(t["q"], t["k"], t["v"], t["log_alpha"], initial_state=t["s0"], bonus=t["u"])


def _fla(module: str, name: str):
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except ImportError:
        return None


naive_recurrent_gla = _fla("fla.ops.gla.naive", "naive_recurrent_gla")
naive_recurrent_rwkv6 = _fla("fla.ops.rwkv6.recurrent_naive", "naive_recurrent_rwkv6")


@pytest.mark.skipif(naive_recurrent_gla is None,
                    reason="fla-core is not installed (pip install --no-deps fla-core einops)")
def test_agrees_with_fla_naive_recurrent_gla():
    """fla's reference: [B, T, H, N] layout, scale N^-0.5 fixed, float32 loop."""
    q, k, v, log_alpha, s0 = make_gla_inputs(2, 100, 4, 4, 16, 16, decay=3.0, seed=9)[:5]
    want = outputs_and_grads(lambda *a, **kw: naive_recurrent_gla(
        *a[:4], initial_state=kw["initial_state"], output_final_state=True),
        [q, k, v, log_alpha, s0])
    got = outputs_and_grads(gla, [q, k, v, log_alpha, s0], scale=16**-0.5, chunk_size=32)
    for name, g, w in zip(NAMES, got, want):
        assert_close_rmse(g, w, FP32_TOL, f"vs fla naive_recurrent_gla: {name}")


@pytest.mark.skipif(naive_recurrent_rwkv6 is None,
                    reason="fla-core is not installed (pip install --no-deps fla-core einops)")
def test_bonus_agrees_with_fla_naive_recurrent_rwkv6():
    """fla's RWKV-6 reference: head-first [B, H, T, N] layout, bonus u [H, N]."""
    inputs = make_gla_inputs(2, 100, 4, 4, 16, 16, decay=3.0, seed=11, bonus=True)

    def fla_rwkv6(q, k, v, w, initial_state, output_final_state, bonus, scale):
        first = [x.transpose(1, 2) for x in (q, k, v, w)]
        y, state = naive_recurrent_rwkv6(*first, bonus, scale=scale, initial_state=initial_state,
                                         output_final_state=True)
        return y.transpose(1, 2), state

    want = outputs_and_grads(fla_rwkv6, inputs, scale=0.25)
    got = outputs_and_grads(gla, inputs, scale=0.25, chunk_size=32)
    for name, g, w in zip(NAMES, got, want):
        assert_close_rmse(g, w, FP32_TOL, f"vs fla naive_recurrent_rwkv6: {name}")
