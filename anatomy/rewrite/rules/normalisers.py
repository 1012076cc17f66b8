"""Rules of normalisers: what a sum-normaliser cancels.

`normalise(x, s) = x / Σ_s x`, so a factor c of x that is constant along s and never zero
cancels: (c·w) / Σ_s (c·w) = w / Σ_s w, also when x is a sum of products that all have
the factor c (c·w₁ + c·w₂, as a product with elu(q) + 1 features distributes). The scale 1/√n of a scaled dot product makes no
difference under the sum normaliser (it does under softmax, whose argument is not a
product). Only with eps = 0: with an epsilon, (c·w) / (Σ c·w + ε) is not w / (Σ w + ε).
"""

from __future__ import annotations

from collections.abc import Iterator

from anatomy.ir import Box, Diagram, Use

from ..edit import Edit
from ..match import const_value, out_axes, producer, read_once, seen_as
from ..site import EXACT, Rule, Site

POSITIVE_MAPS = frozenset({"exp", "softplus", "sigmoid"})


def positive(d: Diagram, u: Use) -> bool:
    """A value that is > 0 wherever it is defined, by construction: a positive number, an
    axis size, exp/softplus/sigmoid of anything, and square roots, powers, quotients and
    products (with sums) of positive values."""
    p = producer(d, u)
    if p is None:
        return False
    if p.op == "const":
        return p.attr("value") > 0
    if p.op == "size" or p.op in POSITIVE_MAPS:
        return True
    if p.op in ("sqrt", "pow"):
        return positive(d, p.inputs[0])
    if p.op in ("div", "contract"):
        return all(positive(d, x) for x in p.inputs)
    return False


def nonzero(d: Diagram, u: Use) -> bool:
    """A value that is never 0: a positive one, a nonzero number, or its negation."""
    value = const_value(d, u)
    p = producer(d, u)
    return positive(d, u) or (value is not None and value != 0) or \
        (p is not None and p.op == "neg" and nonzero(d, p.inputs[0]))


def _terms(d: Diagram, u: Use) -> list[Box] | None:
    """The products a value read once is the sum (or difference) of, or None."""
    p = producer(d, u)
    if p is None or not read_once(d, u.wire):
        return None
    if p.op == "contract":
        return [p]
    if p.op not in ("add", "sub"):
        return None
    terms = [_terms(d, x) for x in p.inputs]
    return None if None in terms else [t for ts in terms for t in ts]


def _key(d: Diagram, f: Use):
    """What identifies a factor across terms: its wire, or the number it holds."""
    value = const_value(d, f)
    return ("wire", f.wire) if value is None else ("number", value)


def _common_factor(d: Diagram, b: Box):
    """A nonzero factor constant along the normalised axis that every term of the
    normaliser's argument has (a scalar; or, in a single product, any factor whose axes
    the product keeps and the other factors carry), as its `_key`."""
    u = b.inputs[0]
    terms = _terms(d, u)
    if not terms:
        return None
    if len(terms) == 1:
        (p,) = terms
        s = {v: k for k, v in seen_as(d, u).items()}[b.attr("along")[0]]
        kept = set(out_axes(d, p))
        for i, f in enumerate(p.inputs):
            rest = {a for j, g in enumerate(p.inputs) if j != i for a in g.axes}
            if s not in f.axes and set(f.axes) <= kept <= rest and nonzero(d, f):
                return _key(d, f)
        return None
    scalars = [{_key(d, f): f for f in t.inputs if not f.axes} for t in terms]
    shared = set.intersection(*(set(x) for x in scalars))
    key = next((k for k, f in scalars[0].items() if k in shared and nonzero(d, f)), None)
    if key is not None:
        return key
    inner = _shared_product(d, terms)  # every term reads one product, and it has the factor
    if inner is not None:
        return next((_key(d, f) + (inner.id,) for f in inner.inputs
                     if not f.axes and nonzero(d, f)), None)
    return None


def _shared_product(d: Diagram, terms: list[Box]) -> Box | None:
    """A product that every term reads exactly once and nothing else reads."""
    ids = {t.id for t in terms}
    for u in terms[0].inputs:
        p = producer(d, u)
        if p is None or p.op != "contract" or any(o.name == p.id for o in d.outputs):
            continue
        readers = [r for r in d.boxes for x in r.inputs if x.wire == p.id]
        if sorted(r.id for r in readers) == sorted(ids):
            return p
    return None


def find_normalise_scale(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op == "normalise" and b.attr("eps", 0.0) == 0:
            key = _common_factor(d, b)
            if key is not None:
                yield Site("normalise_scale", b.id, key)


def normalise_scale(d: Diagram, site: Site) -> Diagram:
    """Leave the factor out of every term, or (site params naming a product) out of the
    one product every term reads."""
    e = Edit(d)
    key = site.params[:2]
    boxes = [d.box(site.params[2])] if len(site.params) > 2 else \
        _terms(d, d.box(site.box).inputs[0])
    for t in boxes:
        i = next(i for i, f in enumerate(t.inputs) if _key(d, f) == key)
        e.set_inputs(t.id, t.inputs[:i] + t.inputs[i + 1:])
    return e.done()


_POSITIVE = """
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  dims h = 2, n = 1, p = 1
  fq[t, h, n] = q * q + 1
  fk[t, h, n] = k * k + 1
"""

RULES = [
    Rule("normalise_scale", EXACT,
         "normalise(c·w, s) = normalise(w, s) for c ≠ 0 constant along s (eps = 0): the "
         "normaliser cancels the scale, (c·w) / Σ_s (c·w) = w / Σ_s w",
         find_normalise_scale, normalise_scale, normalising=True, witnesses=(
             _POSITIVE + "  score[h, t, s] = causal(t, s) * fq * fk[s, h, n] / sqrt(n)\n"
                         "  w[h, t, s] = normalise(score, s)\n  y[t, h, p] = w * v[s, h, p]\n",
             _POSITIVE + "  c[h] = exp(index(h))\n"
                         "  score[h, t, s] = c * fq * fk[s, h, n] * -2\n"
                         "  w[h, t, s] = normalise(score, s)\n  y[t, h, p] = w * v[s, h, p]\n",
             _POSITIVE + "  a[h, t, s] = causal(t, s) * fq * fk[s, h, n] * 2\n"
                         "  b[h, t, s] = full(t, s) * fk * fq[s, h, n] * 2\n"
                         "  w[h, t, s] = normalise(a - b, s)\n  y[t, h, p] = w * v[s, h, p]\n",
             _POSITIVE + "  score[h, t, s] = fq * fk[s, h, n] / sqrt(n)\n"
                         "  w[h, t, s] = normalise(causal(t, s) * score + full(t, s) * score, s)\n"
                         "  y[t, h, p] = w * v[s, h, p]\n",
         )),
]
