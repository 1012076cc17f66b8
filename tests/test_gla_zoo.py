"""RWKV-6 (zoo/rwkv6.anat) and HGRN2 (zoo/hgrn2.anat): a decay per key channel in the zoo,
checked in every form against our references written from the papers (tests/references.py)
and against flash-linear-attention's pure-PyTorch references (`fla-core`, a test extra:
skipped, with the reason, when absent), outputs and gradients.

Tolerances: relative RMSE <= 1e-5 for float32 modules against the float64 references and
against fla's float32 references; <= 1e-10 in float64 where both sides are exact.
"""

from __future__ import annotations

import math

import pytest
import torch
from anatomy.kernels import gla
from anatomy.lowering.torch_ops import segment_decay, shift

import anatomy
from tests.references import (
    REFERENCES,
    load_zoo,
    random_inputs,
    random_params,
    ref_hgrn2,
    ref_rwkv6,
)
from tests.test_lowering import rel_rmse

DIMS = {"rwkv6": {"d": 32, "h": 2, "m": 8, "e": 8}, "hgrn2": {"d": 32, "h": 2}}
T = 70  # crosses the kernel's chunk boundary (64) without being a multiple of it


def _setup(name: str, form: str, dtype=torch.float32, seed: int = 0):
    """The compiled module in `dtype`, its float64 parameters and inputs (leaves)."""
    diagram = load_zoo(name, **DIMS[name])
    module = anatomy.compile(diagram, form=form, **DIMS[name]).to(dtype)
    params = random_params(diagram, seed=seed)
    module.load_state_dict(params)
    inputs = random_inputs(diagram, B=2, T=T, seed=seed + 1)
    return module, params, inputs


def _grads(f, leaves: dict, cot: torch.Tensor) -> dict:
    """d <f(leaves), cot> / d leaves, by name."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in leaves.items()}
    y = f(leaves)
    grads = torch.autograd.grad((y * cot.to(y.dtype)).sum(), list(leaves.values()))
    return y.detach(), dict(zip(leaves, grads))


def _module_fn(module, names: list[str]):
    """The module as a function of its parameters and its input x, by name."""
    def f(leaves):
        state = {k: leaves[k] for k in names}
        return torch.func.functional_call(module, state, (leaves["x"],))
    return f


def _compare(name: str, form: str, reference, dtype) -> None:
    """Outputs and gradients (input and every parameter) of the float32 module in `form`
    against `reference(inputs, params)` evaluated in `dtype`."""
    module, params, inputs = _setup(name, form)
    cot = torch.randn(2, T, DIMS[name]["d"], dtype=torch.float64,
                      generator=torch.Generator().manual_seed(7))
    names = list(params)
    got_y, got = _grads(_module_fn(module, names),
                        {**{k: v.float() for k, v in params.items()}, "x": inputs["x"].float()},
                        cot)
    want_y, want = _grads(lambda leaves: reference({"x": leaves["x"]},
                                                   {k: leaves[k] for k in names}),
                          {**{k: v.to(dtype) for k, v in params.items()},
                           "x": inputs["x"].to(dtype)}, cot)
    assert rel_rmse(got_y, want_y) <= 1e-5
    for k in want:
        assert rel_rmse(got[k], want[k]) <= 1e-5, k


@pytest.mark.parametrize("form", ["parallel", "chunked", "auto"])
@pytest.mark.parametrize("name", ["rwkv6", "hgrn2"])
def test_float32_forms_match_the_papers_recurrence_with_gradients(name, form):
    _compare(name, form, REFERENCES[name][1], torch.float64)


@pytest.mark.parametrize("name", ["rwkv6", "hgrn2"])
def test_chunked_and_auto_run_the_gated_kernel_and_step_with_a_fixed_state(name):
    for form in ("chunked", "auto"):
        module, *_ = _setup(name, form)
        (call,) = [n for n in module.graph.nodes if n.target is gla]
        assert not any(n.target is segment_decay for n in module.graph.nodes)  # no [T, T, N]
        # RWKV-6's read-out is fused into one call with its bonus; its shifted keys,
        # values and decays are gone (only the token shift of x is left)
        assert (call.kwargs.get("bonus") is not None) == (name == "rwkv6")
        assert sum(n.target is shift for n in module.graph.nodes) == (name == "rwkv6")
    module, params, inputs = _setup(name, "auto", torch.float64)
    x = inputs["x"]
    want = REFERENCES[name][1](inputs, params)
    state = module.init_state(2, dtype=torch.float64)
    ys = []
    for a, b in [(0, 5), (5, 6), (6, 66), (66, T)]:  # a prefill, one token, across a chunk
        y, state = module.step(x[:, a:b], state)
        ys.append(y)
    assert rel_rmse(torch.cat(ys, 1), want) <= 1e-10
    (key,) = [k for k in state if k.startswith("ssm:")]
    n, p = DIMS[name]["d"] // DIMS[name]["h"], DIMS[name]["d"] // DIMS[name]["h"]
    assert tuple(state[key].shape) == (2, DIMS[name]["h"], n, p)  # [B, H, N, P]


# -- flash-linear-attention's references -----------------------------------------------------

def _fla(module: str):
    return pytest.importorskip(module, reason="fla-core (flash-linear-attention) is not "
                                              "installed: `pip install fla-core`")


def _fla_rwkv6(r, k, v, log_w, u):
    """fla's naive_recurrent_rwkv6 in our [B, T, H, *] layout (its layout is [B, H, T, *])."""
    naive = _fla("fla.ops.rwkv6.recurrent_naive").naive_recurrent_rwkv6
    o, _ = naive(*(z.transpose(1, 2) for z in (r, k, v, log_w)), u, scale=1.0)
    return o.transpose(1, 2)


def _fla_gla(q, k, v, log_alpha):
    """fla's naive_recurrent_gla (it scales q by N^-1/2, which we undo)."""
    naive = _fla("fla.ops.gla.naive").naive_recurrent_gla
    o, _ = naive(q * math.sqrt(q.shape[-1]), k, v, log_alpha)
    return o


@pytest.mark.parametrize("form", ["parallel", "chunked", "auto"])
def test_rwkv6_matches_fla_naive_recurrent_rwkv6(form):
    _compare("rwkv6", form, lambda i, p: ref_rwkv6(i, p, recurrence=_fla_rwkv6), torch.float32)


@pytest.mark.parametrize("form", ["parallel", "chunked", "auto"])
def test_hgrn2_matches_fla_naive_recurrent_gla(form):
    _compare("hgrn2", form, lambda i, p: ref_hgrn2(i, p, recurrence=_fla_gla), torch.float32)


def test_our_recurrences_agree_with_fla_in_float64_terms():
    """The two wkv recurrences (ours from the paper, fla's) on the same inputs: fla computes in
    float32, so this bounds our reference's reading of the paper, not precision."""
    _fla("fla")
    g = torch.Generator().manual_seed(3)
    r, k, log_w = (torch.randn(2, 40, 2, 8, generator=g) for _ in range(3))
    v, u = torch.randn(2, 40, 2, 6, generator=g), torch.randn(2, 8, generator=g)
    log_w = -torch.nn.functional.softplus(log_w)
    from tests.references import gla_recurrence, rwkv6_recurrence
    assert rel_rmse(_fla_rwkv6(r, k, v, log_w, u), rwkv6_recurrence(r, k, v, log_w, u)) <= 1e-5
    assert rel_rmse(_fla_gla(r, k, v, log_w), gla_recurrence(r, k, v, log_w)) <= 1e-5


# -- Mamba-1: a decay per (channel, state) -------------------------------------------------

def test_mamba1_runs_the_gated_kernel_with_its_channels_as_heads():
    """zoo/mamba1.anat's decay runs along the channel e and the state n: the channel is the
    kernel's heads axis with one value each, so chunked/auto run `gla` and the step form
    keeps a [B, e, n, 1] state; float32 outputs and gradients against the selective scan
    written from the paper (float64), rel RMSE <= 1e-5."""
    dims = {"d": 16, "n": 4}
    diagram = load_zoo("mamba1", **dims)
    params = random_params(diagram, seed=0)
    x = random_inputs(diagram, B=2, T=T, seed=1)["x"]
    cot = torch.randn(2, T, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    want_y, want = _grads(lambda leaves: REFERENCES["mamba1"][1](
        {"x": leaves["x"]}, {k: leaves[k] for k in params}), {**params, "x": x}, cot)
    for form in ("parallel", "chunked", "auto"):
        module = anatomy.compile(diagram, form=form, **dims)
        assert any(n.target is gla for n in module.graph.nodes) == (form != "parallel")
        got_y, got = _grads(_module_fn(module, list(params)),
                            {**{k: v.float() for k, v in params.items()}, "x": x.float()}, cot)
        assert rel_rmse(got_y, want_y) <= 1e-5, form
        for k in want:
            assert rel_rmse(got[k], want[k]) <= 1e-5, (form, k)
    module = anatomy.compile(diagram, **dims).double()
    module.load_state_dict(params)
    state = module.init_state(2, dtype=torch.float64)
    ys = []
    for a, b in [(0, 3), (3, 4), (4, T)]:
        y, state = module.step(x[:, a:b], state)
        ys.append(y)
    assert rel_rmse(torch.cat(ys, 1), want_y) <= 1e-10
    assert tuple(state["ssm:mix"].shape) == (2, 32, 4, 1)  # [B, e, n, 1]


VALUE_DECAY = """anatomy value_decay(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h, n, p]) -> y[t, h, p]
  dims h = 2, n = 4, p = 3
  y[t, h, p] = decay(log_a, t, s) * q * k[s, h, n] * v[s, h, p]

anatomy value_decay_scan(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h, n, p]) -> y[t, h, p]
  dims h = 2, n = 4, p = 3
  st[t, h, n, p] = scan(k * v, log_a, t)
  y[t, h, p] = q * st
"""


@pytest.mark.parametrize("form", ["chunked", "auto"])
def test_a_decay_along_a_value_axis_is_refused_for_the_chunked_forms(form):
    """A decay per (key channel, value) pair beside a heads axis has no chunked kernel: an
    AnatError at the statement names the axis and points at scan, instead of a silent
    [T, T, H, N, P] decay."""
    with pytest.raises(anatomy.AnatError) as info:
        anatomy.compile(VALUE_DECAY, "value_decay", form=form)
    text = str(info.value)
    assert "along the value axis p" in text and "scan(" in text
    assert ":3:" in text and "^" in text  # file:line:col, the line, a caret


def test_the_value_decay_runs_in_its_scan_form_and_in_the_parallel_form():
    """The refused mixer's scan form compiles in every form and equals its parallel masked
    form and the recurrence S_t = exp(log_a_t) * S_{t-1} + k_t v_t^T (float64, 1e-10)."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, T, 2, 4, generator=g, dtype=torch.float64), \
        torch.randn(2, T, 2, 4, generator=g, dtype=torch.float64)
    v = torch.randn(2, T, 2, 3, generator=g, dtype=torch.float64)
    la = -torch.nn.functional.softplus(torch.randn(2, T, 2, 4, 3, generator=g,
                                                   dtype=torch.float64))
    S, want = torch.zeros(2, 2, 4, 3, dtype=torch.float64), []
    for t in range(T):
        S = la[:, t].exp() * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        want.append(torch.einsum("bhn,bhnp->bhp", q[:, t], S))
    want = torch.stack(want, 1)
    parallel = anatomy.compile(VALUE_DECAY, "value_decay", form="parallel")
    assert rel_rmse(parallel(q, k, v, la), want) <= 1e-10
    for form in ("parallel", "chunked", "auto"):
        scan = anatomy.compile(VALUE_DECAY, "value_decay_scan", form=form)
        assert rel_rmse(scan(q, k, v, la), want) <= 1e-10


def test_the_cli_refuses_the_value_decay_with_exit_status_2(tmp_path):
    import subprocess
    import sys
    path = tmp_path / "value_decay.anat"
    path.write_text(VALUE_DECAY)
    out = subprocess.run([sys.executable, "-m", "anatomy.cli", "compile", str(path),
                          "--name", "value_decay", "--form", "chunked"],
                         check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "along the value axis p" in out.stderr and "Traceback" not in out.stderr
