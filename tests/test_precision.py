"""Half precision keeps its decays: every zoo anatomy cast to bfloat16 and float16 against
the same module in float32 (issue 20), and RetNet's decays, which bfloat16 used to round
away, at T = 4096.

Tolerances (relative RMSE of the outputs, ||y_half - y_32|| / ||y_32||): bfloat16 2e-2,
float16 3e-3: about twice the worst measured in bench/precision.py (1.0e-2 and 1.6e-3
relative RMSE at T = 64, d = 512), a few units of bfloat16's and float16's roundoff (2**-8,
2**-11). The default suite runs one anatomy of each family at T = 16, d = 32. RetNet at T = 4096
in bfloat16: 1e-2 (the issue's bound; 7.9e-3 measured, 0.30 before constants were computed
in float32).

The two normalised linear attentions with the identity feature map
(`causal_mix_normalised`, `linear_attention_normalised`) divide by sum_s q.k, which cancels
for random inputs: their outputs are ill-conditioned, not their computation. Rounding only
their weights and inputs to bfloat16 and computing in float64 moves the output by a relative
RMSE of about 1.5 (float32 itself is 2e-4 from float64), so no half-precision tolerance can
hold there. They are checked on inputs whose normaliser does not cancel: every input and
parameter taken in absolute value (`positive`), so every score q.k is >= 0; at the same
tolerances as the rest. bench/precision.py tables both regimes.
"""

from __future__ import annotations

import copy

import pytest
import torch

import anatomy
from anatomy.program import load, zoo_dir

TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 3e-3}
# q.k normalisers without a positive feature map divide by sums near zero on random inputs:
# checked on inputs and parameters taken in absolute value (see above); the positive-feature
# version (linear_attention_elu_normalised) is checked like the rest
ILL_CONDITIONED = {"causal_mix_normalised", "linear_attention_normalised"}
# the default suite: one of each family (the whole zoo: pytest -m slow, about 6 minutes)
QUICK = {"retnet", "ssd", "mha", "gla", "deltanet", "alibi", "hydra", "mla",
         "linear_attention_normalised"}


def positive(module, xs: list[torch.Tensor]):
    """A copy of `module` with every parameter in absolute value, and the inputs in absolute
    value: every q.k score is then >= 0, so a q.k normaliser does not cancel."""
    module = copy.deepcopy(module)
    with torch.no_grad():
        for p in module.parameters():
            p.abs_()
    return module, [x.abs() for x in xs]


def rel_rmse(module, dtype, seq: int, well_conditioned: bool = False) -> float:
    gen = torch.Generator().manual_seed(0)
    d = module.diagram
    xs = []
    for p in d.inputs:
        shape = [2] + [module.shapes.size(a) or (seq if a == d.time_axis else 4)
                       for a in p.axes]
        x = torch.randn(shape, generator=gen)
        xs.append(-torch.nn.functional.softplus(x) if p.name.startswith("log") else x)
    if well_conditioned:
        module, xs = positive(module, xs)
    half = copy.deepcopy(module).to(dtype)
    with torch.no_grad():
        ref, got = module(*xs), half(*(x.to(dtype) for x in xs))
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = got if isinstance(got, tuple) else (got,)
    assert all(g.dtype == dtype for g in got)
    num = sum(float((g.double() - r.double()).pow(2).sum()) for g, r in zip(got, ref))
    return (num / sum(float(r.double().pow(2).sum()) for r in ref)) ** 0.5


def zoo_entries():
    out = []
    for path in sorted(zoo_dir().glob("*.anat")):
        for d in load(path):
            if any(b.op == "slot" for b in d.boxes):
                continue
            marks = () if d.name in QUICK else (pytest.mark.slow,)
            out.append(pytest.param(path, d.name, id=f"{path.stem}:{d.name}", marks=marks))
    return out


@pytest.mark.parametrize("path,name", zoo_entries())
def test_every_zoo_anatomy_in_half_precision(path, name):
    d = load(path)[name]
    dims = {"d": 32} if "d" in d.dims and d.dims["d"].expr is not None else {}
    try:
        module = anatomy.compile(load(path, strict_dims=False, **dims)[name])
    except anatomy.AnatError:
        module = anatomy.compile(d)  # d is tied to other dims: the defaults
    for dtype, tol in TOLERANCE.items():
        err = rel_rmse(module, dtype, seq=16, well_conditioned=name in ILL_CONDITIONED)
        assert err < tol, f"{name} in {dtype}: relative RMSE {err:.2e} >= {tol}"


def test_retnet_keeps_its_decays_in_bfloat16_at_t_4096():
    module = anatomy.compile(zoo_dir() / "retnet.anat", d=128)
    assert rel_rmse(module, torch.bfloat16, seq=4096) < 1e-2
