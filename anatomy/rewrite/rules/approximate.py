"""Approximate (model-changing) rewrites, the Anatomy paper's universal-approximation steps:
the right side is a different function of the same inputs, justified by the expressivity of
the learned maps around it, not by an equation. A proof uses them only when asked
(`--allow-approximate`) and flags them.
"""

from __future__ import annotations

from collections.abc import Iterator

from anatomy.ir import Diagram

from ..edit import Edit, rename_use
from ..match import producer, read_once, seen_as
from ..site import APPROXIMATE, Rule, Site


# -- Bahdanau's additive score becomes a dot product ---------------------------------------------
def find_additive_to_dot(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op != "contract":
            continue
        for i, u in enumerate(b.inputs):
            t = producer(d, u)
            if t is None or t.op != "tanh" or not read_once(d, u.wire):
                continue
            a = producer(d, t.inputs[0])
            if a is not None and a.op == "add" and read_once(d, t.inputs[0].wire):
                yield Site("additive_to_dot", b.id, (i,))


def additive_to_dot(d: Diagram, site: Site) -> Diagram:
    """v · tanh(q + k), summed over the features, ~> q · k summed over them."""
    e = Edit(d)
    b = d.box(site.box)
    (i,) = site.params
    u = b.inputs[i]
    tanh = d.producer(u.wire)
    add = d.producer(tanh.inputs[0].wire)
    to_b = {a: seen_as(d, u)[x] for a, x in seen_as(d, tanh.inputs[0]).items()}
    q, k = (rename_use(term, to_b) for term in add.inputs)
    scalars = [f for f in b.inputs if not f.axes]
    e.set_inputs(b.id, [q, k] + scalars)
    return e.done()


# -- softmax becomes a kernel feature map ------------------------------------------------------
def find_softmax_to_features(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op != "softmax":
            continue
        score = producer(d, b.inputs[0])
        if score is not None and score.op == "contract" and read_once(d, b.inputs[0].wire) \
                and sum(bool(u.axes) for u in score.inputs) == 2:
            yield Site("softmax_to_features", b.id)


def softmax_to_features(d: Diagram, site: Site) -> Diagram:
    """softmax_s(q · k [+ mask]) ~> φ(q) · φ(k) M / Σ_s φ(q) · φ(k) M with φ = elu + 1."""
    e = Edit(d)
    b = d.box(site.box)
    (s,) = b.attr("along")
    score = d.producer(b.inputs[0].wire)
    to_b = seen_as(d, b.inputs[0])
    factors = []
    for u in score.inputs:
        if u.axes:
            elu = e.add("elu", [u], u.axes, "_", before=score.id)
            u = e.add("add", [elu, e.const(1, before=score.id)], u.axes, "_", before=score.id)
        factors.append(u)
    if len(b.inputs) > 1:  # the mask multiplies, in the score's names
        back = {v: k for k, v in to_b.items()}
        factors.append(rename_use(b.inputs[1], back))
    e.replace(score.id, "contract", factors)
    e.replace(b.id, "normalise", [b.inputs[0]], along=(s,))
    return e.done()


_ATTN = """
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
"""

RULES = [
    Rule("additive_to_dot", APPROXIMATE,
         "vᵀ tanh(W q + U k) ~> (W q)ᵀ (U k): Bahdanau's additive score becomes a dot product",
         find_additive_to_dot, additive_to_dot, witnesses=(
             _ATTN + "  param va[h, n] ~ normal(0, 1)\n"
                     "  score[h, t, s] = va * tanh(q + k[s, h, n])\n"
                     "  w[h, t, s] = softmax(score, s, mask=causal(t, s))\n"
                     "  y[t, h, p] = w * v[s, h, p]\n",
         )),
    Rule("softmax_to_features", APPROXIMATE,
         "softmax_s(q · k) ~> φ(q) · φ(k) / Σ_s φ(q) · φ(k) with φ = elu + 1: softmax becomes "
         "a kernel feature map (linearised attention)",
         find_softmax_to_features, softmax_to_features, witnesses=(
             _ATTN + "  score[h, t, s] = q * k[s, h, n] / sqrt(n)\n"
                     "  w[h, t, s] = softmax(score, s, mask=causal(t, s))\n"
                     "  y[t, h, p] = w * v[s, h, p]\n",
         )),
]
