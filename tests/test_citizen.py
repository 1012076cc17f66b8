"""A compiled anatomy as a PyTorch citizen: it survives pickle, torch.save(module) /
torch.load, copy.deepcopy and a weights-only state_dict round trip for every zoo entry (the
reloaded module's outputs equal the original's exactly), and it prints readably.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import anatomy
from tests.references import REFERENCES, load_zoo, random_inputs
from tests.test_lowering import SMALL

T = 12


def compiled(name: str, form: str = "auto"):
    dims = SMALL.get(name, {})
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
