"""`delta_rule` through the stack: typed ports with located errors, printing that re-parses,
a picture, the self-referential state refused with the construct named, every form equal to
the recurrence written from the papers, and the near miss (causal linear attention) refused
with a counterexample."""

from __future__ import annotations

import pytest
import references as R
import torch

import anatomy
from anatomy import AnatError
from anatomy.rewrite import Refusal

CORE = """anatomy core(q[t, h, n], k[t, h, n], v[t, h, p], beta[t, h]{gate_port}) -> y[t, h, p]
  dims h = 2, n = 3, p = 2
  y[t, h, p] = delta_rule(q, k, v, beta, {gate}, t, chunk=4)
"""
GATES = {"deltanet": ("", "0"), "gated": (", log_a[t, h]", "log_a"),
         "kda": (", log_a[t, h, n]", "log_a")}


def core(kind: str) -> str:
    port, gate = GATES[kind]
    return CORE.format(gate_port=port, gate=gate)


def inputs(kind: str, T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, T, 2, 3, generator=g, dtype=torch.float64)
    k = torch.nn.functional.normalize(torch.randn(2, T, 2, 3, generator=g,
                                                  dtype=torch.float64), dim=-1)
    v = torch.randn(2, T, 2, 2, generator=g, dtype=torch.float64)
    beta = torch.rand(2, T, 2, generator=g, dtype=torch.float64)
    shape = {"deltanet": None, "gated": (2, T, 2), "kda": (2, T, 2, 3)}[kind]
    log_a = None if shape is None else -torch.rand(*shape, generator=g, dtype=torch.float64)
    return q, k, v, beta, log_a


@pytest.mark.parametrize("kind", sorted(GATES))
@pytest.mark.parametrize("form", ["parallel", "chunked", "auto"])
def test_every_form_is_the_delta_recurrence(kind, form):
    T = 11
    q, k, v, beta, log_a = inputs(kind, T)
    want = R.delta_recurrence(q, k, v, beta, log_a)
    m = anatomy.compile(core(kind), form=form)
    args = (q, k, v, beta) + (() if log_a is None else (log_a,))
    got = m(*args)
    assert (got - want).abs().max() <= 1e-10 * want.abs().max()
    state = m.init_state(2, dtype=torch.float64)
    outs = []
    for i in range(0, T, 4):  # prefill 4, then chunks
        y, state = m.step(*(a[:, i:i + 4] for a in args), state)
        outs.append(y)
    assert state["ssm:y"].shape == (2, 2, 3, 2)  # [B, H, N, P]
    assert (torch.cat(outs, 1) - want).abs().max() <= 1e-10 * want.abs().max()


def test_it_prints_parses_back_and_draws():
    d = anatomy.load(core("kda"))["core"]
    assert anatomy.load(d.to_text())["core"].structure() == d.structure()
    assert "delta_rule over t" in d.to_svg()


@pytest.mark.parametrize("body, message", [
    ("y[t, h, p] = delta_rule(q, k, v, beta, 0, t)\n  z[t, h, p] = y", None),
    ("y[t, h, p] = delta_rule(q, v, v, beta, 0, t)", "must have the same axes"),
    ("y[t, h, p] = delta_rule(q, k, v, q, 0, t)", "beta has axis n"),
    ("y[t, h, n] = delta_rule(q, k, v, beta, 0, t)", "needs state axes"),
    ("y = delta_rule(q, k, v, beta, 0, t)", "takes its axes from its target"),
])
def test_bad_ports_are_located_errors(body, message):
    text = ("anatomy f(q[t, h, n], k[t, h, n], v[t, h, p], beta[t, h]) -> y[t, h, p]\n"
            f"  dims h = 2, n = 3, p = 2\n  {body}\n")
    if message is None:
        anatomy.load(text.replace("-> y[t, h, p]", "-> z[t, h, p]"))
        return
    with pytest.raises(AnatError, match=message) as e:
        anatomy.load(text)
    assert e.value.loc.line == 3


def test_a_state_that_reads_itself_is_refused_naming_the_constructs():
    text = """anatomy f(k[t, h, n], v[t, h, p]) -> y[t, h, n, p]
  dims h = 2, n = 3, p = 2
  y[t, h, n, p] = shift(y, t) + k * v
"""
    with pytest.raises(AnatError, match="refers to itself") as e:
        anatomy.load(text)
    assert "delta_rule(q, k, v, beta, log_a, t)" in e.value.hint and "scan(" in e.value.hint


def test_causal_linear_attention_is_not_the_delta_rule():
    near_miss = core("deltanet") + """
anatomy linear(q[t, h, n], k[t, h, n], v[t, h, p], beta[t, h]) -> y[t, h, p]
  dims h = 2, n = 3, p = 2
  y[t, h, p] = causal(t, s) * q * k[s, h, n] * v[s, h, p]
"""
    program = anatomy.load(near_miss)
    result = anatomy.prove(program["core"], program["linear"])
    assert isinstance(result, Refusal)
    assert result.counterexample is not None and result.counterexample.rel_rmse >= 1e-3
