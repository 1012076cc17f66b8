"""A compiled anatomy as a PyTorch citizen: it survives pickle, torch.save(module) /
torch.load, copy.deepcopy and a weights-only state_dict round trip for every zoo entry (the
reloaded module's outputs equal the original's exactly), and it prints readably.
"""

from __future__ import annotations

import copy
import io
import logging
import pickle

import pytest
import torch

import anatomy
from tests.references import REFERENCES, load_zoo, random_inputs
from tests.test_lowering import SMALL

T = 12
# small dims for entries tests/test_lowering.py's SMALL does not size yet (SMALL wins)
DIMS = {"gated_linear_attention": {"d": 32, "h": 2}, "deltanet": {"d": 32, "h": 4},
        "gated_deltanet": {"d": 32, "h": 4}, "kda": {"d": 32, "h": 4}, **SMALL}


def compiled(name: str, form: str = "auto"):
    dims = DIMS.get(name, {})
    diagram = load_zoo(name, **dims)
    module = anatomy.compile(diagram, form=form, **dims)
    inputs = random_inputs(diagram, B=2, T=T, seed=1, dtype=torch.float32)
    return module, [inputs[p.name] for p in diagram.inputs]


def torch_round_trip(obj, weights_only: bool):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=weights_only)


@pytest.mark.parametrize("form", ["parallel", "chunked", "auto"])
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_every_zoo_entry_survives_saving_and_loading(name, form):
    module, inputs = compiled(name, form)
    module.eval()
    want = module(*inputs)
    fresh, _ = compiled(name, form)  # other random weights: loading must replace them
    fresh.load_state_dict(torch_round_trip(module.state_dict(), weights_only=True))
    copies = {
        "pickle": pickle.loads(pickle.dumps(module)),
        "torch.save": torch_round_trip(module, weights_only=False),
        "deepcopy": copy.deepcopy(module),
        "state_dict": fresh.eval(),
    }
    for how, other in copies.items():
        assert isinstance(other, anatomy.lowering.AnatModule), how
        assert (other.diagram.name, other.form, other.training) == (name, form, False), how
        assert torch.equal(other(*inputs), want), how
        if how != "state_dict":
            assert all(a is not b for a, b in zip(other.parameters(), module.parameters()))


def test_loading_keeps_dtype_requires_grad_training_and_grown_parts():
    module = anatomy.compile("zoo/pattention.anat", "tokenformer_attention", d=32, h=4)
    grown = anatomy.grow(module, 8).double()
    first = next(grown.parameters())
    first.requires_grad_(False)
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    for other in (pickle.loads(pickle.dumps(grown)), copy.deepcopy(grown)):
        assert torch.equal(other(x), grown(x))
        assert next(other.parameters()).dtype == torch.float64
        assert not next(other.parameters()).requires_grad
        assert other.training
        assert [(n, p.shape) for n, p in other.named_parameters()] == \
            [(n, p.shape) for n, p in grown.named_parameters()]


@torch.no_grad()
def test_step_form_after_loading_continues_a_sequence():
    module, (x,) = compiled("ssd")
    state = module.init_state(2)
    _, state = module.step(x[:, :7], state)
    loaded = pickle.loads(pickle.dumps(module))
    y_loaded, _ = loaded.step(x[:, 7:], copy.deepcopy(state))
    y, _ = module.step(x[:, 7:], state)
    assert torch.equal(y_loaded, y)


def test_print_shows_name_form_ports_and_each_parameters_shape_and_use():
    module = anatomy.compile("zoo/ssd.anat", d=32, h=4, n=8)
    text = str(module)
    assert text == repr(module)
    lines = text.splitlines()
    assert lines[0] == "ssd(x[t, d=32]) -> y[t, d=32]  [auto form, 6,860 parameters]"
    assert lines[1].startswith("  # Mamba-2's SSD mixer")
    assert "  (w_xs): Parameter[d=32, h=4, p=16]  used in: xs[t, h, p] = linear(x)" in lines
    assert "  (a_log): Parameter[h=4]  used in: log_a[t, h] = dt[t, h] * -exp(a_log)" in lines
    assert sum(p.numel() for p in module.parameters()) == 6860
    assert len([ln for ln in lines if ln.startswith("  (")]) == len(list(module.parameters()))


def test_print_nests_composites_and_names_other_dtypes_and_shared_uses():
    module = anatomy.compile("zoo/hydra.anat", d=32, h=4, n=8).double()
    lines = str(module).splitlines()
    assert "  (a_log): Parameter[h=4] float64  used in: log_af[t, h] = dtf[t, h] * -exp(a_log)" \
        "  (also in log_ab)" in lines
    assert any(ln.startswith("  (yf): ss(c[t, n], b[t, n], v[t, h, p], log_a[t, h]) -> "
                             "y[t, h, p]  [auto form, 0 parameters]") for ln in lines)
    assert all(len(ln) <= 100 for ln in lines)


# -- graphs: custom ops, torch.export with a dynamic T, meta and fake tensors, torch.compile --
# the default suite's sample, one entry per kernel family: softmax (SDPA), the SSD op, the
# GLA op, the delta-rule op (chunked, and its recurrence in the parallel form), softmax with a
# bias (FlexAttention/our chunked softmax), quasiseparable (Hydra: two SSD ops), a bias of
# the sequence length (sigmoid attention's -log T: a symbolic size), the scan op and a
# 3-operand contraction; every entry and form: -m slow, and bench/citizen.py
GRAPH_CASES = [("mha", "auto"), ("ssd", "chunked"), ("gated_linear_attention", "auto"),
               ("kda", "auto"), ("deltanet", "parallel"), ("forgetting_transformer", "auto"),
               ("hydra", "auto"), ("sigmoid_attention", "auto"), ("context_memory", "auto"),
               ("causal_mix", "parallel")]


def export_and_meta(name: str, form: str) -> None:
    """torch.export with a static T and with T dynamic (run at another T), against the eager
    module (relative RMSE <= 1e-5, float32), and the module built and run on meta."""
    module, x12 = compiled(name, form)
    dims = DIMS.get(name, {})
    diagram = module.diagram
    find = diagram.shapes.sizes.find
    x133 = [t for t in compiled_inputs(diagram, 133)]
    with torch.no_grad():
        want12, want133 = module(*x12), module(*x133)
    static = torch.export.export(module, tuple(x12))
    assert rel_rmse(static.module()(*x12), want12) <= 1e-5
    T = torch.export.Dim("T", min=3, max=4096)
    shapes = tuple({1: T} if p.axes and find(p.axes[0]) == find(diagram.time_axis) else None
                   for p in diagram.inputs)
    dynamic = torch.export.export(module, tuple(x12), dynamic_shapes=shapes)
    assert rel_rmse(dynamic.module()(*x133), want133) <= 1e-5
    with torch.device("meta"):
        on_meta = anatomy.compile(diagram, form=form, **dims)
    out = on_meta(*(x.to("meta") for x in x133))
    assert out.device.type == "meta" and out.shape == want133.shape


def compiled_inputs(diagram, T: int) -> list:
    inputs = random_inputs(diagram, B=2, T=T, seed=1, dtype=torch.float32)
    return [inputs[p.name] for p in diagram.inputs]


def rel_rmse(got, want) -> float:
    got, want = got.double(), want.double()
    return ((got - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt()).item()


@pytest.mark.parametrize(("name", "form"), GRAPH_CASES)
def test_export_with_static_and_dynamic_T_and_the_meta_device(name, form):
    export_and_meta(name, form)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["parallel", "chunked", "auto"])
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_every_zoo_entry_exports_with_a_dynamic_T_and_runs_on_meta(name, form):
    export_and_meta(name, form)


def test_fake_tensors_run_the_chunked_kernel_as_an_op():
    from torch._subclasses.fake_tensor import FakeTensorMode
    module = anatomy.compile("ssd", d=32, h=4, n=8)
    with FakeTensorMode(allow_non_fake_inputs=True):
        y = module(torch.randn(2, 1000, 32))
    assert y.shape == (2, 1000, 32)


class _Restarts(logging.Handler):
    """Counts dynamo's "Restarting analysis" records (each one traces the whole module again:
    a float default traced as a symbolic float did it once per call site)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        self.count += "Restarting analysis" in record.getMessage()


# ssd: the chunked kernel as a custom op; alibi: position biases (its closures once fixed T);
# context_memory: a three-operand contraction (opt_einsum's order once fixed T)
@pytest.mark.parametrize(("name", "form"), [("ssd", "chunked"), ("alibi", "auto"),
                                            ("context_memory", "auto")])
def test_compile_has_no_graph_breaks_and_no_recompiles_across_T(name, form):
    from torch._dynamo.utils import counters
    module, _ = compiled(name, form)
    torch._dynamo.reset()
    counters.clear()
    restarts = _Restarts()
    logger = logging.getLogger("torch._dynamo.convert_frame")
    torch._logging.set_logs(dynamo=logging.INFO)
    logger.addHandler(restarts)
    try:
        fn = torch.compile(module, backend="aot_eager", dynamic=True, fullgraph=True)
        for T in (9, 70, 133):
            x = compiled_inputs(module.diagram, T)
            got = fn(*x)
            got.square().sum().backward()
            assert rel_rmse(got, module(*x)) <= 1e-5
    finally:
        logger.removeHandler(restarts)
        torch._logging.set_logs()
    assert counters["stats"]["unique_graphs"] == 1
    assert restarts.count == 0


def test_ssd_op_registration_and_gradients_against_the_quadratic_reference():
    from anatomy.kernels.ssd import ssd_naive
    from anatomy.kernels.ssd.op import ssd_chunked_op
    gen = torch.Generator().manual_seed(0)
    B, T, G, H, N, P = 2, 37, 1, 2, 4, 3

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)
    q, k, v = rand(B, T, G, N), rand(B, T, G, N), rand(B, T, H, P)
    log_a, s0 = -torch.rand(B, T, H, generator=gen, dtype=torch.float64), rand(B, H, N, P)
    inputs = [t.requires_grad_() for t in (q, k, v, log_a, s0)]
    torch.library.opcheck(ssd_chunked_op, (*inputs, 0.5, 16, "torch"))
    y, final = ssd_chunked_op(*inputs, 0.5, 16, "torch")
    y_ref, final_ref = ssd_naive(*inputs[:4], scale=0.5, initial_state=s0,
                                 output_final_state=True)
    dy, d_final = rand(*y.shape), rand(*final.shape)
    grads = torch.autograd.grad((y, final), inputs, (dy, d_final))
    grads_ref = torch.autograd.grad((y_ref, final_ref), inputs, (dy, d_final))
    assert rel_rmse(y, y_ref) <= 1e-10 and rel_rmse(final, final_ref) <= 1e-10
    for got, want in zip(grads, grads_ref):
        assert rel_rmse(got, want) <= 1e-10


def test_scan_op_against_a_loop_with_gradients():
    from anatomy.lowering.scan import scan_op
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(2, 9, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    a = torch.rand(2, 9, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    s0 = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(scan_op, (u, a, 1, s0))
    state, states = s0, []
    for t in range(9):  # S_t = a_t S_{t-1} + u_t
        state = a[:, t] * state + u[:, t]
        states.append(state)
    want = torch.stack(states, 1)
    got = scan_op(u, a, 1, s0)
    assert rel_rmse(got, want) <= 1e-12
    dy = torch.randn(2, 9, 3, generator=gen, dtype=torch.float64)
    for g, w in zip(torch.autograd.grad(got, (u, a, s0), dy),
                    torch.autograd.grad(want, (u, a, s0), dy)):
        assert rel_rmse(g, w) <= 1e-12
    assert torch.autograd.gradcheck(lambda *x: scan_op(*x[:2], 1, x[2]), (u, a, s0))


def rand64(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def gla_loop(q, k, v, log_alpha, s0, bonus, scale):
    """GLA (Yang et al. 2024), one step at a time: S_t = diag(alpha_t) S_{t-1} + k_t^T v_t,
    y_t = scale q_t S_t; with RWKV-6's bonus u (Peng et al. 2024):
    y_t = scale q_t (S_{t-1} + diag(u) k_t^T v_t). Head h reads group h // (H // G)."""
    H = v.shape[2]
    q, k = (x.repeat_interleave(H // q.shape[2], dim=2) for x in (q, k))
    state, ys = s0, []
    for t in range(q.shape[1]):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]
        decayed = log_alpha[:, t, :, :, None].exp() * state
        seen = decayed + kv if bonus is None else state + bonus[None, :, :, None] * kv
        ys.append(scale * torch.einsum("bhn,bhnp->bhp", q[:, t], seen))
        state = decayed + kv
    return torch.stack(ys, 1), state


def delta_loop(q, k, v, beta, log_a, s0, scale):
    """The gated delta rule (Yang et al. 2024/2025; KDA's per-channel gate), one step at a
    time: S_t = (I - beta_t k_t k_t^T) diag(alpha_t) S_{t-1} + beta_t k_t v_t^T,
    o_t = scale q_t^T S_t, alpha_t = exp(log_a_t) (1 without a gate)."""
    state, outs = s0, []
    for t in range(q.shape[1]):
        if log_a is not None:
            a = log_a[:, t].exp()
            state = (a[..., None] if a.dim() == 3 else a[..., None, None]) * state
        k_t, b_t = k[:, t, :, :, None], beta[:, t, :, None, None]
        state = state - b_t * k_t * (k_t * state).sum(-2, keepdim=True) \
            + b_t * k_t * v[:, t, :, None, :]
        outs.append(scale * torch.einsum("bhn,bhnp->bhp", q[:, t], state))
    return torch.stack(outs, 1), state


def check_op_against(op, args, loop, n_tensors: int) -> None:
    """Outputs, final states and the gradients of both through the op against the loop
    (float64, relative RMSE <= 1e-10), after torch.library.opcheck (fake, autograd, aot)."""
    gen = torch.Generator().manual_seed(1)
    torch.library.opcheck(op, args)
    tensors = [x for x in args[:n_tensors] if x is not None]
    y, final = op(*args)
    y_ref, final_ref = loop(*args[:n_tensors], args[n_tensors])
    dy, d_final = rand64(gen, *y.shape), rand64(gen, *final.shape)
    grads = torch.autograd.grad((y, final), tensors, (dy, d_final))
    grads_ref = torch.autograd.grad((y_ref, final_ref), tensors, (dy, d_final))
    assert rel_rmse(y, y_ref) <= 1e-10 and rel_rmse(final, final_ref) <= 1e-10
    for got, want in zip(grads, grads_ref):
        assert rel_rmse(got, want) <= 1e-10


@pytest.mark.parametrize("bonus", [False, True])
def test_gla_op_registration_and_gradients_against_the_recurrence(bonus):
    from anatomy.kernels.gla.op import gla_chunked_op
    gen = torch.Generator().manual_seed(0)
    B, T, G, H, N, P = 2, 37, 1, 2, 4, 3
    q, k, v = rand64(gen, B, T, G, N), rand64(gen, B, T, G, N), rand64(gen, B, T, H, P)
    log_alpha = -torch.rand(B, T, H, N, generator=gen, dtype=torch.float64)
    s0, u = rand64(gen, B, H, N, P), rand64(gen, H, N) if bonus else None
    tensors = [None if x is None else x.requires_grad_() for x in (q, k, v, log_alpha, s0, u)]
    check_op_against(gla_chunked_op, (*tensors, 0.5, 16, "torch"), gla_loop, 6)


@pytest.mark.parametrize(("gate", "backend"), [("none", "torch"), ("head", "torch"),
                                               ("channel", "torch"), ("channel", "recurrent")])
def test_delta_rule_op_registration_and_gradients_against_the_recurrence(gate, backend):
    from anatomy.kernels.delta_rule.op import delta_rule_op
    gen = torch.Generator().manual_seed(0)
    B, T, H, N, P = 2, 21, 2, 4, 3
    q, v = rand64(gen, B, T, H, N), rand64(gen, B, T, H, P)
    k = torch.nn.functional.normalize(rand64(gen, B, T, H, N), dim=-1)
    beta = torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    gate_shape = {"none": None, "head": (B, T, H), "channel": (B, T, H, N)}[gate]
    log_a = None if gate_shape is None else \
        -torch.rand(*gate_shape, generator=gen, dtype=torch.float64)
    tensors = [None if x is None else x.requires_grad_()
               for x in (q, k, v, beta, log_a, rand64(gen, B, H, N, P))]
    check_op_against(delta_rule_op, (*tensors, 0.5, 8, backend), delta_loop, 6)
