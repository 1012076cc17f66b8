"""What individual zoo entries claim beyond matching their references (tests/test_lowering.py
checks every entry against tests/references.py in every form): MLA's absorbed form and its
latent KV cache, GLA as MLA with a grouped latent, Memory Mosaics' causality and recurrent
state, TokenFormer's growth (`anatomy.grow`).

Tolerances: relative RMSE <= 1e-12 in float64 (the forms are exact rewrites of each other).
"""

from __future__ import annotations

import pytest
import torch

import anatomy
from anatomy import AnatError
from tests.test_lowering import rel_rmse

MLA = {"d": 32, "h": 4, "n": 8, "r": 4, "l": 16, "m": 24}


def _mla(name: str, form: str = "auto", **dims):
    return anatomy.compile("zoo/mla.anat", name, form=form, **{**MLA, **dims}).double()


def test_mla_absorbed_form_equals_the_papers_form_with_the_same_parameters():
    mla, absorbed = _mla("mla"), _mla("mla_absorbed")
    # one set of parameter tensors: the absorbed form only multiplies them in another order
    assert {k: v.shape for k, v in mla.state_dict().items()} == \
        {k: v.shape for k, v in absorbed.state_dict().items()}
    absorbed.load_state_dict(mla.state_dict())
    x = torch.randn(2, 50, 32, dtype=torch.float64)
    want = mla(x)
    assert rel_rmse(absorbed(x), want) <= 1e-12
    parallel = _mla("mla_absorbed", form="parallel")
    parallel.load_state_dict(mla.state_dict())
    assert rel_rmse(parallel(x), want) <= 1e-12
    # decoding with the absorbed form, one token at a time, gives the same outputs
    state = absorbed.init_state(2, dtype=torch.float64)
    ys = []
    for t in range(50):
        y, state = absorbed.step(x[:, t:t + 1], state)
        ys.append(y)
    assert rel_rmse(torch.cat(ys, 1), want) <= 1e-12


def test_mla_absorbed_form_caches_only_the_latent_and_the_rope_key():
    absorbed, mla = _mla("mla_absorbed"), _mla("mla")
    x = torch.randn(2, 10, 32, dtype=torch.float64)
    _, small = absorbed.step(x, absorbed.init_state(2, dtype=torch.float64))
    _, big = mla.step(x, mla.init_state(2, dtype=torch.float64))
    caches = {k: tuple(v.shape) for k, v in small.items() if k.startswith("cache:")}
    assert caches == {"cache:c_kv": (2, 10, 16), "cache:k_r": (2, 10, 4)}  # l + r per token
    per_token = sum(v.shape[2:].numel() for k, v in big.items() if k.startswith("cache:"))
    assert per_token == 4 * (8 + 4) + 4 * 8  # the naive form caches keys and values per head


def test_gla_with_one_group_is_mla():
    mla = _mla("mla")
    gla = anatomy.compile("zoo/gla.anat", **{**MLA, "g": 1}).double()
    params = dict(mla.state_dict())
    params["w_c_kv"] = params["w_c_kv"][:, None, :]  # [d, l] -> [d, g = 1, l]
    gla.load_state_dict(params)
    x = torch.randn(2, 30, 32, dtype=torch.float64)
    assert rel_rmse(gla(x), mla(x)) <= 1e-12


def _memory(name: str, form: str = "auto"):
    return anatomy.compile("zoo/memory_mosaics.anat", name, form=form, d=32, h=4).double()


def test_context_memory_is_causal_though_its_values_look_one_step_ahead():
    memory = _memory("context_memory")
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    y = memory(x)
    assert torch.equal(y[:, 0], torch.zeros_like(y[:, 0]))  # an empty memory answers 0
    x2 = x.clone()
    x2[:, 10] += 1.0
    y2 = memory(x2)
    assert torch.equal(y2[:, :10], y[:, :10])  # no output sees a later token
    # y_10 does see x_10: through the query k_10 and the value v_9 it completes
    assert (y2[:, 10] - y[:, 10]).abs().max() > 1e-3


def test_context_memory_gradients_are_finite_at_the_empty_first_step():
    memory = _memory("context_memory")
    x = torch.randn(1, 6, 32, dtype=torch.float64, requires_grad=True)
    memory(x).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in memory.parameters())


def test_memory_mosaics_decode_in_uneven_chunks_with_a_fixed_size_key_state():
    for name in ("context_memory", "persistent_memory"):
        memory = _memory(name)
        x = torch.randn(2, 90, 32, dtype=torch.float64)
        want = memory(x)
        state = memory.init_state(2, dtype=torch.float64)
        ys = []
        for a, b in [(0, 7), (7, 8), (8, 70), (70, 71), (71, 90)]:  # crosses a chunk (64)
            y, state = memory.step(x[:, a:b], state)
            ys.append(y)
        assert rel_rmse(torch.cat(ys, 1), want) <= 1e-12
        # the leaky average of the keys is a recurrence: its last state, not a cache of W x
        assert state["scan:kbar"].shape == (2, 4, 8)
        assert "cache:kt" not in state


# -- TokenFormer: Pattention and growing it -------------------------------------------------

LAYER = {"i": 16, "o": 24, "n": 40}


def _param_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_grow_appends_zero_tokens_and_keeps_the_function():
    layer = anatomy.compile("zoo/pattention.anat", "pattention", **LAYER).double()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    grown = anatomy.grow(layer, 24)
    x = torch.randn(2, 30, 16, dtype=torch.float64)
    assert rel_rmse(grown(x), layer(x)) <= 1e-12
    assert _param_count(grown) == _param_count(layer) + 24 * (16 + 24)
    assert grown.shapes.dims["n"] == 64 and grown.shapes.dims["n0"] == 40  # tau is kept
    sd = grown.state_dict()
    assert torch.equal(sd["key_tokens"][:40], before["key_tokens"])
    assert not sd["key_tokens"][40:].any() and not sd["value_tokens"][40:].any()
    assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())  # untouched


def test_growing_with_tau_rederived_would_change_the_function():
    """Why grow pins n0: a fresh layer with n + 24 tokens scales scores by sqrt(n + 24)."""
    layer = anatomy.compile("zoo/pattention.anat", "pattention", **LAYER).double()
    grown = anatomy.grow(layer, 24)
    fresh = anatomy.compile("zoo/pattention.anat", "pattention", **{**LAYER, "n": 64}).double()
    fresh.load_state_dict(grown.state_dict())
    assert fresh.shapes.dims["n0"] == 64
    x = torch.randn(2, 30, 16, dtype=torch.float64)
    assert rel_rmse(fresh(x), layer(x)) > 1e-2


def test_grow_the_tokenformer_block_in_every_form():
    block = anatomy.compile("zoo/pattention.anat", d=32, h=4).double()
    grown = anatomy.grow(block, 100)
    layers = ("qf", "kf", "vf", "y")  # the four Pattention layers, each grown
    assert [getattr(grown, n).shapes.dims["n"] for n in layers] == [1124] * 4
    assert _param_count(grown) == _param_count(block) + 4 * 100 * (32 + 32)
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    want = block(x)
    assert rel_rmse(grown(x), want) <= 1e-12
    state = grown.init_state(2, dtype=torch.float64)
    ys = []
    for a, b in [(0, 25), (25, 26), (26, 40)]:
        y, state = grown.step(x[:, a:b], state)
        ys.append(y)
    assert rel_rmse(torch.cat(ys, 1), want) <= 1e-12


def test_zero_keys_and_values_do_not_learn_but_zero_keys_alone_do():
    layer = anatomy.compile("zoo/pattention.anat", "pattention", **LAYER).double()
    x = torch.randn(2, 30, 16, dtype=torch.float64)
    zeros = anatomy.grow(layer, 8)
    zeros(x).square().sum().backward()
    assert not zeros.key_tokens.grad[40:].any() and not zeros.value_tokens.grad[40:].any()
    keys_only = anatomy.grow(layer, 8, fill={"value_tokens": torch.nn.init.normal_})
    assert keys_only.value_tokens[40:].abs().sum() > 0
    assert rel_rmse(keys_only(x), layer(x)) <= 1e-12  # zero keys alone keep the function
    keys_only(x).square().sum().backward()
    assert keys_only.key_tokens.grad[40:].abs().sum() > 0


def test_grow_refuses_what_it_cannot_grow():
    with pytest.raises(AnatError, match="no anatomy in mha declares a dim `tokens`"):
        anatomy.grow(anatomy.compile("zoo/mha.anat", d=32, h=4), 8, dim="tokens")
    layer = anatomy.compile("zoo/pattention.anat", "pattention", **LAYER)
    with pytest.raises(AnatError, match="positive integer"):
        anatomy.grow(layer, 0)
