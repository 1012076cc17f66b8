"""The search template's per-channel gate (zoo/search/attention.anat, `channel_gate`, issue
15): GLA's decay per key channel inside the similarity. Filled with linear attention's
components it is gated linear attention, checked against the recurrence written from Yang
et al. 2024 (S_t = diag(alpha_t) S_{t-1} + k_t v_t^T, o_t = q_t S_t) with the module's own
parameters: relative RMSE <= 1e-10 in float64, <= 1e-5 for float32 against it.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

import anatomy
from anatomy.causality import acausal_reason
from anatomy.search import SearchSpace
from tests.references import gla_recurrence, random_params
from tests.test_lowering import rel_rmse

ATTENTION = anatomy.zoo_dir() / "search" / "attention.anat"
GLA = "mha identity channel_gate causal_mask no_normaliser"


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.load(ATTENTION, dims={"d": 16, "h": 2})


def test_channel_gate_is_a_similarity_filler(space):
    assert "channel_gate" in [f.name for f in space.program.fillers("similarity")]


def _reference(p: dict, x: torch.Tensor) -> torch.Tensor:
    """The filled template by hand: MHA projections, the gate from the query's channels,
    the recurrence, the output map."""
    q, k, v = (torch.tensordot(x, p[f"q.w_{c}"], 1) for c in "qkv")
    log_alpha = F.logsigmoid(torch.tensordot(q, p["score.w_log_alpha"], 1)) / 16
    o = gla_recurrence(q / math.sqrt(q.shape[-1]), k, v, log_alpha)
    return torch.tensordot(o, p["w_y"], 2)


@pytest.mark.parametrize("form", ["parallel", "chunked", "auto"])
def test_filled_with_linear_attention_it_is_gated_linear_attention(space, form):
    variant = space.instantiate(space.parse_choice(GLA))
    assert acausal_reason(variant, variant.shapes) is None
    module = anatomy.compile(variant, form=form, **dict(variant.shapes.dims)).double()
    params = random_params(variant)
    assert set(params) == set(module.state_dict())
    module.load_state_dict(params)
    x = torch.randn(2, 37, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    want = _reference(params, x)
    assert rel_rmse(module(x), want) <= 1e-10
    assert rel_rmse(module.float()(x.float()), want) <= 1e-5


@pytest.mark.parametrize("mask", ["causal_mask", "fixed_decay", "selective_decay"])
@pytest.mark.parametrize("normaliser", ["softmax_normaliser", "sum_normaliser"])
def test_every_causal_filling_with_the_gate_runs_and_is_causal(space, mask, normaliser):
    variant = space.instantiate(space.parse_choice(f"gqa2 elu_plus_one channel_gate {mask} "
                                                   f"{normaliser}"))
    assert acausal_reason(variant, variant.shapes) is None
    module = anatomy.compile(variant, **dict(variant.shapes.dims)).double()
    x = torch.randn(1, 12, 16, dtype=torch.float64)
    y = module(x)
    x2 = x.clone()
    x2[:, 6] += 1.0
    y2 = module(x2)
    assert torch.isfinite(y).all()
    assert torch.equal(y2[:, :6], y[:, :6])  # no output sees a later token
