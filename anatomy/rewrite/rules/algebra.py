"""Rules of the algebra of Einstein products: (re)association, distribution over sums, and
the units of + and *. A contraction multiplies its factors and sums the axes its output
lacks, so these are the laws of a commutative semiring, with sums over named axes.

Every rule rewrites inside one `contract` box and its factors; none reaches into a
nonlinear box, which is what forbids reassociation across a softmax, a normaliser or any
nonlinearity: their arguments are not factors of the product.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations

from anatomy.ir import Diagram

from ..edit import Edit, local_axes, rename_use
from ..match import const_value, out_axes, producer, read_once, seen_as, summed
from ..site import EXACT, Rule, Site


def _contracts(d: Diagram):
    return (b for b in d.boxes if b.op == "contract")


# -- flatten: a product of a product is one product --------------------------------------------
def find_flatten(d: Diagram) -> Iterator[Site]:
    for b in _contracts(d):
        for i, u in enumerate(b.inputs):
            p = producer(d, u)
            if p is not None and p.op == "contract" and read_once(d, u.wire):
                yield Site("flatten", b.id, (i,))


def flatten(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    (i,) = site.params
    u = b.inputs[i]
    p = d.producer(u.wire)
    rename = seen_as(d, u)
    taken = local_axes(d, b)
    for a in sorted(summed(d, p)):  # the inner sum's own axes must not meet the outer's
        rename[a] = e.fresh_axis(a) if a in taken or a in rename.values() else a
    inner = tuple(rename_use(f, rename) for f in p.inputs)
    e.set_inputs(b.id, b.inputs[:i] + inner + b.inputs[i + 1:])
    return e.done()


# -- reassociate: split a product into a product of products -----------------------------------
def find_reassociate(d: Diagram) -> Iterator[Site]:
    for b in _contracts(d):
        tensors = [i for i, u in enumerate(b.inputs) if u.axes]
        for k in range(2, len(tensors)):
            for group in combinations(tensors, k):
                yield Site("reassociate", b.id, group)


def reassociate(d: Diagram, site: Site) -> Diagram:
    """Σ_A Π F = Σ_{A∖A'} Π(F∖G) · (Σ_{A'} Π G), where A' holds the summed axes that only
    factors of G carry (distributivity: the other factors are constant along A')."""
    e = Edit(d)
    b = d.box(site.box)
    group = [b.inputs[i] for i in site.params]
    rest = [u for i, u in enumerate(b.inputs) if i not in site.params]
    outside = {a for u in rest for a in u.axes} | set(out_axes(d, b))
    axes: list[str] = []
    for u in group:
        axes.extend(a for a in u.axes if a not in axes and a in outside)
    inner = e.add("contract", group, tuple(axes), f"{b.id}_part", before=b.id)
    e.set_inputs(b.id, rest + [inner])
    return e.done()


# -- distribute: a product with a sum in it is a sum of products ---------------------------------
def find_distribute(d: Diagram) -> Iterator[Site]:
    for b in _contracts(d):
        for i, u in enumerate(b.inputs):
            p = producer(d, u)
            if p is None or p.op not in ("add", "sub") or not read_once(d, u.wire):
                continue
            rename = seen_as(d, u)
            others = {a for j, f in enumerate(b.inputs) if j != i for a in f.axes}
            terms = [{rename[a] for a in t.axes} for t in p.inputs]
            if all(set(out_axes(d, b)) <= others | t for t in terms):
                yield Site("distribute", b.id, (i,))


def distribute(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    (i,) = site.params
    u = b.inputs[i]
    p = d.producer(u.wire)
    rename = seen_as(d, u)
    axes = out_axes(d, b)
    parts = []
    for term in p.inputs:
        factors = b.inputs[:i] + (rename_use(term, rename),) + b.inputs[i + 1:]
        parts.append(e.add("contract", factors, axes, f"{b.id}_term", before=b.id))
    e.replace(b.id, p.op, parts)
    return e.done()


# -- units: x + 0 = x, x * 1 = x --------------------------------------------------------------
def find_add_zero(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op != "add":
            continue
        for i, u in enumerate(b.inputs):
            other = b.inputs[1 - i]
            if const_value(d, u) == 0 and set(other.axes) == set(out_axes(d, b)):
                yield Site("add_zero", b.id, (i,))
                break


def add_zero(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    other = b.inputs[1 - site.params[0]]
    e.redirect(b.id, other)
    return e.done()


def find_mul_one(d: Diagram) -> Iterator[Site]:
    for b in _contracts(d):
        if len(b.inputs) < 2:
            continue
        for i, u in enumerate(b.inputs):
            if const_value(d, u) == 1:
                yield Site("mul_one", b.id, (i,))
                break


def mul_one(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    (i,) = site.params
    e.set_inputs(b.id, b.inputs[:i] + b.inputs[i + 1:])
    return e.done()


_SCORE = """
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
"""

RULES = [
    Rule("flatten", EXACT,
         "Σ_A (Π F · Σ_B Π G) = Σ_{A∪B} Π F · Π G: a product of a product is one product "
         "(the inner sum's axes renamed apart)",
         find_flatten, flatten, normalising=True, witnesses=(
             _SCORE + "  score[h, t, s] = q * k[s, h, n]\n  y[t, h, p] = score * v[s, h, p]\n",
             _SCORE + "  kv[t, h, n, p] = k * v\n  y[t, h, p] = causal(t, s) * q * kv[s, h, n, p]\n",
         )),
    Rule("reassociate", EXACT,
         "Σ_A Π F = Σ_{A∖A'} Π(F∖G) · Σ_{A'} Π G when only factors in G carry the axes A' "
         "(never across a nonlinearity: its argument is not a factor)",
         find_reassociate, reassociate, witnesses=(
             _SCORE + "  y[t, h, p] = causal(t, s) * q * k[s, h, n] * v[s, h, p]\n",
         )),
    Rule("distribute", EXACT,
         "Σ_A (x ± y) · Π F = Σ_A x · Π F ± Σ_A y · Π F: a product distributes over a sum",
         find_distribute, distribute, normalising=True, witnesses=(
             _SCORE + "  m[h, t, s] = causal(t, s) * q * k[s, h, n]\n"
                      "  w[h, t, s] = m - full(t, s)\n  y[t, h, p] = w * v[s, h, p]\n",
         )),
    Rule("add_zero", EXACT, "x + 0 = x", find_add_zero, add_zero, normalising=True,
         witnesses=(_SCORE + "  y[t, h, p] = v + 0\n",)),
    Rule("mul_one", EXACT, "x · 1 = x", find_mul_one, mul_one, normalising=True,
         witnesses=(_SCORE + "  y[t, h, p] = 1 * v\n",)),
]
