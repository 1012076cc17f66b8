"""Compiled zoo anatomies against the independent references of tests/references.py, in
every execution form each admits, plus the module's life as a PyTorch citizen (autograd,
torch.compile, torch.export, dtypes) and its errors.

Tolerances: relative RMSE <= 1e-10 in float64 (the forms are exact rewrites of the same
math), <= 1e-5 in float32 against the float64 reference.
"""

from __future__ import annotations

import pytest
import torch

import anatomy
from anatomy import AnatError
from tests.references import REFERENCES, load_zoo, random_inputs, random_params

# small dims per zoo anatomy, so the suite stays fast (cores have no dims)
SMALL = {
    "mha": {"d": 32, "h": 4}, "mqa": {"d": 32, "h": 4}, "gqa": {"d": 32, "h": 4, "g": 2},
    "gta": {"d": 32, "h": 4, "g": 2}, "gla": {"d": 32, "h": 4, "g": 2, "n": 8, "r": 4, "l": 8, "m": 16},
    "mla": {"d": 32, "h": 4, "n": 8, "r": 4, "l": 16, "m": 16},
    "mla_absorbed": {"d": 32, "h": 4, "n": 8, "r": 4, "l": 16, "m": 16},
    "bahdanau": {"d": 32, "h": 4}, "sigmoid_attention": {"d": 32, "h": 4},
    "relu_attention": {"d": 32, "h": 4}, "linear_attention": {"d": 32, "h": 4},
    "linear_attention_elu": {"d": 32, "h": 4}, "linear_attention_normalised": {"d": 32, "h": 4},
    "linear_attention_elu_normalised": {"d": 32, "h": 4}, "retnet": {"d": 32, "h": 4},
    "ssd": {"d": 32, "h": 4, "n": 8}, "hydra": {"d": 32, "h": 4, "n": 8},
    "context_memory": {"d": 32, "h": 4}, "persistent_memory": {"d": 32, "h": 4},
    "pattention": {"i": 16, "o": 24, "n": 40}, "tokenformer_attention": {"d": 32, "h": 4},
    "forgetting_transformer": {"d": 32, "h": 4}, "alibi": {"d": 32, "h": 4},
    "sliding_window": {"d": 32, "h": 4},
    "rwkv6": {"d": 32, "h": 2, "m": 8, "e": 8}, "hgrn2": {"d": 32, "h": 2},
    "mamba1": {"d": 16, "n": 4},
}
# no recurrent form: they look ahead (flip, shift to earlier, the sequence length)
NOT_RECURRENT = {"quasiseparable_core", "hydra_construction_core", "hydra",
                 "sigmoid_attention", "relu_attention"}
T = 70  # crosses the kernels' default chunk boundary (64) without being a multiple


def rel_rmse(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    return ((got - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt()).item()


def build(name: str, form: str, dtype=torch.float64, seed: int = 0):
    dims = SMALL.get(name, {})
    diagram = load_zoo(name, **dims)
    module = anatomy.compile(diagram, form=form, **dims)
    params = random_params(diagram, seed=seed)
    module.to(dtype)
    module.load_state_dict(params)
    inputs = random_inputs(diagram, B=2, T=T, seed=seed + 1)
    want = REFERENCES[name][1](inputs, params, dims)
    return module, diagram, inputs, want


@pytest.mark.parametrize("form", ["parallel", "chunked", "auto"])
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_every_form_matches_its_reference_float64(name, form):
    module, diagram, inputs, want = build(name, form)
    got = module(*(inputs[p.name] for p in diagram.inputs))
    assert got.shape == want.shape
    assert rel_rmse(got, want) <= 1e-10


@pytest.mark.parametrize("name", sorted(set(REFERENCES) - {"linear_attention_normalised",
                                                             "causal_mix_normalised"}))
def test_float32_matches_the_float64_reference(name):
    # (the identity-feature normalised mixes divide by signed sums that can be ~0)
    module, diagram, inputs, want = build(name, "auto", dtype=torch.float32)
    got = module(*(inputs[p.name].float() for p in diagram.inputs))
    assert got.dtype == torch.float32
    assert rel_rmse(got, want) <= 1e-5


@pytest.mark.parametrize("name", sorted(set(REFERENCES) - NOT_RECURRENT))
def test_prefill_then_decode_equals_the_parallel_form(name):
    module, diagram, inputs, want = build(name, "auto")
    timed = [p.axes[:1] == (diagram.time_axis,) for p in diagram.inputs]
    args = [inputs[p.name] for p in diagram.inputs]

    def chunk(a, b):
        return [x[:, a:b] if is_t else x for x, is_t in zip(args, timed)]

    state = module.init_state(2, dtype=torch.float64)
    outs = []
    y, state = module.step(*chunk(0, 40), state)  # chunked prefill
    outs.append(y)
    for t in range(40, T):  # then one token at a time
        y, state = module.step(*chunk(t, t + 1), state)
        outs.append(y)
    assert state["pos"] == T
    assert rel_rmse(torch.cat(outs, 1), want) <= 1e-10


@pytest.mark.parametrize("name", sorted(NOT_RECURRENT))
def test_anatomies_that_look_ahead_have_no_step_form(name):
    module, *_ = build(name, "auto")
    with pytest.raises(AnatError, match="no recurrent form"):
        module.init_state(1)


def test_recurrent_families_carry_a_fixed_size_state():
    module, _diagram, inputs, _ = build("ssd", "auto")
    state = module.init_state(2, dtype=torch.float64)
    (key,) = [k for k in state if k.startswith("ssm:")]
    before = state[key].shape
    x = inputs["x"]
    for t in range(5):
        _, state = module.step(x[:, t:t + 1], state)
    assert state[key].shape == before == (2, 4, 8, 16)  # [B, H, N, P]
    assert not any(k.startswith("cache:") for k in state)


def test_softmax_attention_carries_a_kv_cache():
    module, _diagram, inputs, _ = build("mha", "auto")
    state = module.init_state(2, dtype=torch.float64)
    x = inputs["x"]
    _, state = module.step(x[:, :3], state)
    _, state = module.step(x[:, 3:4], state)
    assert state["cache:k"].shape == (2, 4, 4, 8)  # [B, T so far, H, N]


def test_forms_use_the_structured_kernels_where_they_apply():
    ssd = anatomy.compile("zoo/ssd.anat", form="chunked", d=32, h=4, n=8)
    assert "ssd(" in ssd.code and "segment_decay" not in ssd.code
    parallel = anatomy.compile("zoo/ssd.anat", form="parallel", d=32, h=4, n=8)
    assert "ssd(" not in parallel.code and "segment_decay" in parallel.code
    mha = anatomy.compile("zoo/mha.anat", d=32, h=4)
    assert "attention(" in mha.code and "softmax" not in mha.code
    hydra = anatomy.compile("zoo/hydra.anat", d=32, h=4, n=8)
    assert hydra.yf.code.count("ssd(") == 1 and hydra.yb.code.count("ssd(") == 1


def test_a_users_new_mixer_gets_chunked_and_recurrent_forms():
    # not in the zoo: a learned per-head decay and a relu feature map
    source = """
anatomy my_retention(x[t, d]) -> y[t, d]
  dims d = 32, h = 4, n = d / h, p = d / h
  param decay_logit[h] ~ normal(1.0)
  q[t, h, n] = relu(linear(x))
  k[t, h, n] = relu(linear(x))
  v[t, h, p] = linear(x)
  log_gamma[h] = -softplus(decay_logit)
  o[t, h, p] = decay(log_gamma, t, s) * q * k[s, h, n] * v[s, h, p]
  y[t, d] = linear(o)
"""
    chunked = anatomy.compile(source, form="chunked").double()
    parallel = anatomy.compile(source, form="parallel").double()
    parallel.load_state_dict(chunked.state_dict())
    assert "ssd(" in chunked.code
    x = torch.randn(2, 50, 32, dtype=torch.float64)
    assert rel_rmse(chunked(x), parallel(x)) <= 1e-10
    state = chunked.init_state(2, dtype=torch.float64)
    ys = []
    for t in range(50):
        y, state = chunked.step(x[:, t:t + 1], state)
        ys.append(y)
    assert rel_rmse(torch.cat(ys, 1), parallel(x)) <= 1e-10


def test_softmax_over_a_row_with_every_key_masked_gives_zero_weights():
    # strictly earlier keys only: the first query has none
    source = """
anatomy earlier(q[t, h, n], k[t, h, n], v[t, h, n]) -> y[t, h, n]
  score[h, t, s] = q * k[s, h, n]
  w[h, t, s] = softmax(score, s, mask=causal(t, s) - window(t, s, size=1))
  y[t, h, n] = w * v[s, h, n]
"""
    module = anatomy.compile(source).double()
    q, k, v = (torch.randn(2, 9, 3, 4, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    y = module(q, k, v)
    assert torch.equal(y[:, 0], torch.zeros_like(y[:, 0]))
    assert torch.allclose(y[:, 1], v[:, 0])  # one earlier key: all its weight
    y.square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_the_rewrite_engines_interpreter_agrees_on_reshape_and_empty_rows():
    import sympy

    from anatomy.verify.symbolic import evaluate, symbolically_equal
    program = anatomy.load("""
anatomy twice(x[t, d]) -> y[t, d]
  dims d = 6, h = 2
  q[t, h, p] = reshape(x)
  y[t, d] = reshape(q)

anatomy same(x[t, d]) -> y[t, d]
  dims d = 6
  y[t, d] = x

anatomy earlier(q[t, n], k[t, n]) -> w[t, s]
  dims n = 2
  score[t, s] = q * k[s, n]
  w[t, s] = softmax(score, s, mask=causal(t, s) - window(t, s, size=1))
""")
    assert symbolically_equal(program["twice"], program["same"], 3) == (True, "")
    w = evaluate(program["earlier"], 3)["w"].arr
    assert list(w[0]) == [0, 0, 0] and sympy.simplify(w[1, 0]) == 1  # one earlier key


@pytest.mark.parametrize("name,form", [("mha", "auto"), ("ssd", "chunked"), ("retnet", "auto"),
                                       ("gta", "parallel")])
def test_gradients_agree_with_finite_differences(name, form):
    dims = {"mha": {"d": 8, "h": 2}, "ssd": {"d": 8, "h": 2, "n": 4}, "retnet": {"d": 8, "h": 2},
            "gta": {"d": 8, "h": 2, "g": 1}}[name]
    module = anatomy.compile(f"zoo/{name}.anat", form=form, **dims).double()
    weight = next(iter(module.state_dict()))
    x = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)
    w = module.state_dict()[weight].clone().requires_grad_(True)

    def f(x, w):
        return torch.func.functional_call(module, {weight: w}, (x,))
    assert torch.autograd.gradcheck(f, (x, w), eps=1e-6, atol=1e-7)


def test_parameters_are_named_and_initialised_as_the_diagram_says():
    module = anatomy.compile("zoo/ssd.anat", d=32, h=4, n=8)
    sd = module.state_dict()
    assert {"w_xs", "w_z", "w_b", "w_c", "dt_bias", "a_log", "D", "w_dt", "scale_o",
            "w_y"} <= set(sd)
    assert sd["w_xs"].shape == (32, 4, 16)  # [d, h, p]
    assert torch.equal(sd["D"], torch.ones(4))
    a = sd["a_log"].exp()
    assert ((a >= 1) & (a <= 16)).all()  # log_uniform(1, 16)
    dt = torch.nn.functional.softplus(sd["dt_bias"])
    assert ((dt >= 0.001 - 1e-6) & (dt <= 0.1 + 1e-6)).all()
    bound = 1 / 32 ** 0.5  # fan_in(d)
    assert sd["w_xs"].abs().max() <= bound and sd["w_xs"].abs().max() > bound / 2


def test_module_code_reads_like_the_diagram():
    module = anatomy.compile("zoo/mha.anat", form="parallel", d=32, h=4)
    code = module.code
    for wire in ("q = ", "k = ", "v = ", "score = ", "w = ", "o = ", "y = "):
        assert wire in code
    hydra = anatomy.compile("zoo/hydra.anat", d=32, h=4, n=8)
    assert {"yf", "yb"} <= {name for name, _ in hydra.named_children()}


def test_torch_compile_has_no_graph_breaks():
    for path, form, dims in [("zoo/mha.anat", "auto", {"d": 32, "h": 4}),
                             ("zoo/ssd.anat", "chunked", {"d": 32, "h": 4, "n": 8})]:
        module = anatomy.compile(path, form=form, **dims)
        x = torch.randn(2, 40, 32)
        explanation = torch._dynamo.explain(module)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons


def test_torch_compile_runs_and_agrees():
    module = anatomy.compile("zoo/retnet.anat", d=32, h=4)
    x = torch.randn(2, 40, 32)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    assert rel_rmse(compiled(x), module(x)) <= 1e-6


def test_torch_export():
    module = anatomy.compile("zoo/gqa.anat", d=32, h=4, g=2)
    x = torch.randn(2, 16, 32)
    exported = torch.export.export(module, (x,))
    assert rel_rmse(exported.module()(x), module(x)) <= 1e-6


def test_bfloat16_and_autocast_on_cpu():
    module = anatomy.compile("zoo/ssd.anat", d=32, h=4, n=8)
    x = torch.randn(2, 40, 32)
    want = module(x)
    low = module.to(torch.bfloat16)(x.bfloat16())
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert rel_rmse(low, want) <= 3e-2
    module.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = module(x)
    assert torch.isfinite(auto).all() and rel_rmse(auto, want) <= 3e-2


def test_wrong_input_shapes_name_the_axis_and_size():
    module = anatomy.compile("zoo/mha.anat", d=32, h=4)
    with pytest.raises(AnatError, match=r"axis d must be 32, got 16"):
        module(torch.randn(2, 10, 16))
    with pytest.raises(AnatError, match=r"must have 3 dims \[batch, t, d\]"):
        module(torch.randn(10, 32))
    core = anatomy.compile("zoo/cores.anat", "linear_core")
    q = torch.randn(1, 10, 2, 4)
    with pytest.raises(AnatError, match="axis t is 9 but axis t of `q` is 10"):
        core(q, q, torch.randn(1, 9, 2, 4))


def test_missing_or_inconsistent_dims_are_named():
    source = """
anatomy f(x[t, d]) -> y[t, d]
  dims d, h = 4, p = d / h
  v[t, h, p] = linear(x)
  y[t, d] = linear(v)
"""
    with pytest.raises(AnatError, match="axis d of parameter w_v has no size"):
        anatomy.compile(source)
    assert anatomy.compile(source, d=32)(torch.randn(1, 3, 32)).shape == (1, 3, 32)
    with pytest.raises(AnatError, match="not a whole number"):
        anatomy.compile(source, d=30)
    with pytest.raises(AnatError, match="`hh` is not a dim"):
        anatomy.compile(source, d=32, hh=2)


def test_cli_compiles_and_runs_the_whole_zoo():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "anatomy.cli", "compile", "zoo/", "--run",
                          "--dims", "d=32,h=4"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    n_anatomies = sum(len(list(p)) for p in anatomy.zoo().values())
    assert len(lines) == n_anatomies and all("ran T=16" in line for line in lines)
    bad = subprocess.run([sys.executable, "-m", "anatomy.cli", "compile", "zoo/mha.anat",
                          "--dims", "d=30"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "not a whole number" in bad.stderr


CUSTOM_ATTENTION = """
anatomy sliding(x[t, d]) -> y[t, d]
  dims d = 32, h = 4, n = d / h
  q[t, h, n] = linear(x)
  k[t, h, n] = linear(x)
  v[t, h, n] = linear(x)
  score[h, t, s] = q * k[s, h, n] / sqrt(n)
  w[h, t, s] = softmax(score, s, mask=window(t, s, size=16))
  o[t, h, n] = w * v[s, h, n]
  y[t, d] = linear(o)

anatomy softcapped(x[t, d]) -> y[t, d]
  dims d = 32, h = 4, n = d / h
  q[t, h, n] = linear(x)
  k[t, h, n] = linear(x)
  v[t, h, n] = linear(x)
  score[h, t, s] = q * k[s, h, n] / sqrt(n)
  w[h, t, s] = softmax(30 * tanh(score / 30), s, mask=causal(t, s))
  o[t, h, n] = w * v[s, h, n]
  y[t, d] = linear(o)
"""


@pytest.mark.parametrize("name", ["sliding", "softcapped"])
def test_custom_masks_and_score_mods_lower_to_the_fused_softmax(name):
    auto = anatomy.compile(CUSTOM_ATTENTION, name).double()
    parallel = anatomy.compile(CUSTOM_ATTENTION, name, form="parallel").double()
    parallel.load_state_dict(auto.state_dict())
    assert "softmax_attention(" in auto.code and "softmax_attention(" not in parallel.code
    x = (3 * torch.randn(2, 70, 32, dtype=torch.float64)).requires_grad_(True)
    with torch.no_grad():
        assert rel_rmse(auto(x), parallel(x)) <= 1e-10
    ga = torch.autograd.grad(auto(x).square().sum(), x)[0]
    gp = torch.autograd.grad(parallel(x).square().sum(), x)[0]
    assert rel_rmse(ga, gp) <= 1e-10
    state = auto.init_state(2, dtype=torch.float64)
    ys = []
    for t in range(0, 70, 7):
        y, state = auto.step(x[:, t:t + 7].detach(), state)
        ys.append(y)
    assert rel_rmse(torch.cat(ys, 1), parallel(x).detach()) <= 1e-10


def test_cli_refuses_a_non_positive_sequence_length():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "anatomy.cli", "compile", "zoo/mha.anat",
                          "--run", "--seq", "0"], capture_output=True, text=True, check=False)
    assert out.returncode == 2 and "expected a positive integer" in out.stderr
    assert "Traceback" not in out.stderr


UNUSED_PARAM = """
anatomy f(x[t, d]) -> y[t, d]
  dims d = 8, h = 2, n = 4
  q[t, h, n] = linear(x)
  k[t, h, n] = linear(x)
  v[t, h, n] = linear(x)
  la[t, h] = -softplus(linear(x))
  sc[h, t, s] = q * k[s, h, n] / sqrt(n)
  w[h, t, s] = softmax(sc, s, mask=causal(t, s))
  o[t, h, n] = w * v[s, h, n]
  y[t, d] = linear(o)
"""


@pytest.mark.parametrize("form", ["parallel", "chunked", "auto"])
def test_a_parameter_no_output_reads_stays_in_every_form(form):
    """`la` feeds nothing: the fused form drops its box, but the module keeps its weight,
    so a state_dict loads into every form alike and the step form (which reads the diagram's
    parameters) runs."""
    torch.manual_seed(0)
    ref = anatomy.compile(UNUSED_PARAM, form="parallel").double()
    m = anatomy.compile(UNUSED_PARAM, form=form).double()
    m.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    y, _ = m.step(x, state=m.init_state(2, dtype=torch.float64))
    assert rel_rmse(y, ref(x)) < 1e-12
