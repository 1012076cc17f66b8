"""Causality decided from the diagram (anatomy.causality): the step form is refused, with an
AnatError naming the box and its line, exactly when an output may see later tokens; and
the step form of what is accepted equals the parallel form token by token.
"""

from __future__ import annotations

import pytest
import torch

import anatomy
from anatomy import AnatError
from anatomy.causality import acausal_reason

HEAD = """anatomy f(x[t, d]) -> y[t, d]
  dims d = 8, h = 2, n = 4
  q[t, h, n] = linear(x)
  k[t, h, n] = linear(x)
  v[t, h, n] = linear(x)
  la[t, h] = -softplus(linear(x))
"""
SOFTMAX = HEAD + """  score[t, s, h] = q * k[s, h, n]
  w[t, s, h] = softmax(score, s{mask})
  o[t, h, n] = w * v[s, h, n]
  y[t, d] = linear(o)
"""
LINEAR = HEAD + """  fq[t, h, n] = elu(q) + 1
  fk[t, h, n] = elu(k) + 1
  num[t, h, n] = {mask}fq * fk[s, h, n] * v[s, h, n]
  den[t, h] = {mask}fq * fk[s, h, n]
  o[t, h, n] = num / (den + 1e-6)
  y[t, d] = linear(o)
"""


def verdict(text: str):
    d = anatomy.load(text)["f"]
    return acausal_reason(d, d.shapes)


def step_matches_parallel(text: str, T: int = 7) -> float:
    torch.manual_seed(0)
    m = anatomy.compile(text).double()
    x = torch.randn(2, T, 8, dtype=torch.float64)
    ref = m(x)
    state = m.init_state(2, dtype=torch.float64)
    ys = []
    for i in range(T):
        y, state = m.step(x[:, i:i + 1], state)
        ys.append(y)
    return ((torch.cat(ys, 1) - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("text, line, box", [
    (SOFTMAX.format(mask=""), 8, "softmax"),                        # softmax over all of s
    (LINEAR.format(mask=""), 9, "contract"),                        # an unmasked sum over s
    (SOFTMAX.format(mask=", mask=full(t, s)"), 8, "softmax"),
    (SOFTMAX.format(mask=", mask=causal(s, t)"), 8, "softmax"),     # keys after the query
    (LINEAR.format(mask="decay(la[s, h], s, t) * "), 9, "contract"),  # a decay the wrong way
])
def test_a_form_that_would_see_later_tokens_is_refused_naming_the_box(text, line, box):
    m = anatomy.compile(text)
    with pytest.raises(AnatError) as e:
        m.init_state(1)
    assert e.value.loc.line == line and f"`{box}`" in e.value.message
    assert "no recurrent form" in e.value.message
    assert f"{e.value.loc.line} |" in str(e.value)  # the line itself is shown, with a caret


def test_a_mask_shifted_to_let_the_next_key_through_is_refused():
    text = SOFTMAX.replace("o[t, h, n] = w * v[s, h, n]",
                           "o[t, h, n] = shift(w, s, by=-1) * v[s, h, n]")
    box, why = verdict(text.format(mask=", mask=causal(t, s)"))
    assert box.op == "shift" and "reads later positions" in why


@pytest.mark.parametrize("text", [
    SOFTMAX.format(mask=", mask=causal(t, s)"),
    SOFTMAX.format(mask=", mask=window(t, s, size=3)"),
    SOFTMAX.format(mask=", mask=causal(t, s) - window(t, s, size=1)"),  # keys before t
    LINEAR.format(mask="causal(t, s) * "),
    LINEAR.format(mask="decay(la, t, s) * "),
    # keys strictly before the query, then shifted one step later: still s <= t
    SOFTMAX.replace("o[t, h, n] = w * v[s, h, n]", "o[t, h, n] = shift(w, s) * v[s, h, n]")
    .format(mask=", mask=causal(t, s) - window(t, s, size=1)"),
])
def test_causal_mixers_keep_a_step_form_equal_to_the_parallel_form(text):
    assert verdict(text) is None
    assert step_matches_parallel(text) < 1e-12


def test_the_sequence_length_and_norms_over_time_look_at_the_whole_sequence():
    text = SOFTMAX.format(mask=", mask=causal(t, s)")
    box, _ = verdict(text.replace("y[t, d] = linear(o)", "y[t, d] = linear(o) / size(t)"))
    assert box.op == "size"
    box, _ = verdict(text.replace("y[t, d] = linear(o)",
                                  "y[t, d] = layernorm(linear(o), t, affine=false)"))
    assert box.op == "layernorm"


def test_causality_is_decided_through_composite_boxes():
    core = """anatomy core(q[t, h, n], k[t, h, n], v[t, h, n]) -> o[t, h, n]
  dims h = 2, n = 4
  score[t, s, h] = q * k[s, h, n]
  w[t, s, h] = softmax(score, s{mask})
  o[t, h, n] = w * v[s, h, n]

"""
    call = HEAD + "  o[t, h, n] = core(q, k, v)\n  y[t, d] = linear(o)\n"
    box, _ = verdict(core.format(mask="") + call)
    assert box.op == "softmax" and box.loc.line == 4  # the box inside the composite
    assert verdict(core.format(mask=", mask=causal(t, s)") + call) is None


def test_every_zoo_step_form_is_refused_exactly_when_the_analysis_says_so():
    """Over the zoo: refused anatomies are the bidirectional ones (Hydra, the bidirectional
    and quasiseparable cores) and those that divide by the sequence length (sigmoid and
    ReLU attention); every other anatomy is causal."""
    refused = set()
    for path in sorted(anatomy.zoo_dir().glob("*.anat")):
        for d in anatomy.load(path, strict_dims=False):
            if acausal_reason(d, d.shapes) is not None:
                refused.add(d.name)
    assert refused == {"quasiseparable_core", "hydra_construction_core", "hydra",
                       "linear_bidirectional_core", "softmax_bidirectional_core",
                       "softmax_reassociated_core", "relu_attention", "sigmoid_attention"}
