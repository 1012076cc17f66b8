"""What individual zoo entries claim beyond matching their references (tests/test_lowering.py
checks every entry against tests/references.py in every form): MLA's absorbed form and its
latent KV cache, GLA as MLA with a grouped latent.

Tolerances: relative RMSE <= 1e-12 in float64 (the forms are exact rewrites of each other).
"""

from __future__ import annotations

import torch

import anatomy
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
