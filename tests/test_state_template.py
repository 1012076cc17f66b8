"""zoo/search/state.anat: the recurrent-state template beside attention.anat. Its six
fillers (softmax, linear, scalar gate, per-channel gate, delta rule, gated delta rule) are
distinct classes, causal by the diagram's analysis, and each filled mixer's step form
equals its parallel form."""

from __future__ import annotations

import pytest
import torch

import anatomy
from anatomy.causality import acausal_reason
from anatomy.search.space import SearchSpace

STATE = anatomy.zoo_dir() / "search" / "state.anat"
FILLERS = ["softmax_attention", "linear_state", "scalar_gate", "channel_gate", "delta",
           "gated_delta"]


@pytest.fixture(scope="module")
def space():
    return SearchSpace.load(STATE, dims={"d": 16, "h": 2})


def test_six_fillers_six_classes(space):
    enumeration = space.enumerate(workers=1)
    assert sorted(c.name for c in enumeration.classes.values()) == sorted(FILLERS)


@pytest.mark.parametrize("filler", FILLERS)
def test_every_filler_is_causal_and_steps_like_its_parallel_form(space, filler):
    variant = space.instantiate(space.parse_choice(filler))
    assert acausal_reason(variant, variant.shapes) is None
    torch.manual_seed(0)
    m = anatomy.compile(variant, **dict(variant.shapes.dims)).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    ref = m(x)
    state = m.init_state(2, dtype=torch.float64)
    ys = []
    for i in range(9):
        y, state = m.step(x[:, i:i + 1], state)
        ys.append(y)
    assert (torch.cat(ys, 1) - ref).abs().max() <= 1e-10 * ref.abs().max()
