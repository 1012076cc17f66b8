"""Rules of the algebra of Einstein products: (re)association, distribution over sums, and
the units of + and *. A contraction multiplies its factors and sums the axes its output
lacks, so these are the laws of a commutative semiring, with sums over named axes.

Every rule rewrites inside one `contract` box and its factors; none reaches into a
nonlinear box, which is what forbids reassociation across a softmax, a normaliser or any
nonlinearity: their arguments are not factors of the product.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import combinations

from anatomy.ir import Box, Diagram, Use

from ..edit import Edit, local_axes, rename_use
from ..match import const_value, out_axes, producer, read_once, reads_as, seen_as, summed
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


# -- units and zeros: x + 0 = x, x · 1 = x, x · 0 = 0, x ** 0 = 1, x ** 1 = x -------------------
# A unit may broadcast: `log_a[h] + 0 * index(t)` is log_a[h] read along t. The readers
# then read the narrower value, which `reads_as` allows only where they broadcast it
# without changing a count (a constant decay, a kept axis, an axis another factor carries).
def _forwards(d: Diagram, b: Box, to: Use) -> bool:
    """Whether the readers of box `b` may read `to` (in b's axis names) instead."""
    own = out_axes(d, b)
    if not set(to.axes) <= set(own):
        return False
    return set(to.axes) == set(own) or reads_as(d, b.id, to.axes)


def _is_one(d: Diagram, u: Use) -> bool:
    """A factor that is 1: the number 1, or a power with exponent 0."""
    p = producer(d, u)
    return const_value(d, u) == 1 or (p is not None and p.op == "pow"
                                      and const_value(d, p.inputs[1]) == 0)


def is_zero(d: Diagram, u: Use) -> bool:
    """The number 0, or a product with a zero factor."""
    p = producer(d, u)
    return const_value(d, u) == 0 or (p is not None and p.op == "contract"
                                      and any(is_zero(d, f) for f in p.inputs))


def find_add_zero(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op not in ("add", "sub"):
            continue
        for i, u in enumerate(b.inputs):
            if (b.op == "add" or i == 1) and is_zero(d, u) and \
                    _forwards(d, b, b.inputs[1 - i]):
                yield Site("add_zero", b.id, (i,))
                break


def add_zero(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    other = b.inputs[1 - site.params[0]]
    e.redirect(b.id, other)
    return e.done()


def _drops(d: Diagram, b: Box, i: int) -> bool:
    """Whether factor i of product b can be left out when it is 1: every axis it carries is
    kept or carried by another factor (else it counts the terms of a sum), and what
    remains either carries every kept axis or is one factor its readers read broadcast."""
    rest = [u for j, u in enumerate(b.inputs) if j != i]
    covered = {a for u in rest for a in u.axes}
    own = set(out_axes(d, b))
    if not set(b.inputs[i].axes) <= covered | own:
        return False
    if own <= covered:
        return True
    return len(rest) == 1 and not summed(d, b) and _forwards(d, b, rest[0])


def find_mul_one(d: Diagram) -> Iterator[Site]:
    for b in _contracts(d):
        if len(b.inputs) < 2:
            continue
        for i, u in enumerate(b.inputs):
            if _is_one(d, u) and _drops(d, b, i):
                yield Site("mul_one", b.id, (i,))
                break


def mul_one(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    (i,) = site.params
    rest = b.inputs[:i] + b.inputs[i + 1:]
    if set(out_axes(d, b)) <= {a for u in rest for a in u.axes}:
        e.set_inputs(b.id, rest)
    else:  # one factor left, read broadcast along the axes only the 1 carried
        e.redirect(b.id, rest[0])
    return e.done()


def find_mul_zero(d: Diagram) -> Iterator[Site]:
    for b in _contracts(d):
        if any(is_zero(d, u) for u in b.inputs) and reads_as(d, b.id, ()):
            yield Site("mul_zero", b.id)


def mul_zero(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    e.redirect(site.box, e.const(0, before=site.box))
    return e.done()


def find_pow_unit(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op != "pow" or b.inputs[1].axes:
            continue
        n = const_value(d, b.inputs[1])
        if n == 1 and _forwards(d, b, b.inputs[0]) or n == 0 and reads_as(d, b.id, ()):
            yield Site("pow_unit", b.id)


def pow_unit(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    if const_value(d, b.inputs[1]) == 1:
        e.redirect(b.id, b.inputs[0])
    else:
        e.redirect(b.id, e.const(1, before=b.id))
    return e.done()


# -- numbers: arithmetic on numbers is a number ---------------------------------------------
_ARITHMETIC = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "div": lambda x, y: x / y,
               "pow": lambda x, y: x ** y, "neg": lambda x: -x, "sqrt": math.sqrt,
               "exp": math.exp, "log": math.log, "contract": lambda *xs: math.prod(xs)}


def _evaluate(d: Diagram, b: Box) -> float | None:
    """The number a box computes from numbers alone (None if it does not, if the arithmetic
    is undefined there, a division by 0 or the root of a negative number, or if the number
    is negative)."""
    values = [const_value(d, u) for u in b.inputs]
    if b.op not in _ARITHMETIC or out_axes(d, b) or not values or None in values:
        return None
    try:
        value = _ARITHMETIC[b.op](*values)
        value = float(value) if isinstance(value, (int, float)) else None  # not complex
    except (ArithmeticError, ValueError):
        return None
    # a negative number is left as written: printed as a power's base it would not re-parse
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def find_fold_numbers(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        numbers = sum(const_value(d, u) is not None for u in b.inputs)
        if _evaluate(d, b) is not None or b.op == "contract" and numbers > 1:
            yield Site("fold_numbers", b.id)


def fold_numbers(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    value = _evaluate(d, b)
    if value is not None:
        e.redirect(b.id, e.const(value, before=b.id))
    else:  # the numbers among a product's factors, multiplied into one
        numbers = [const_value(d, u) for u in b.inputs if const_value(d, u) is not None]
        rest = [u for u in b.inputs if const_value(d, u) is None]
        e.set_inputs(b.id, rest + [e.const(math.prod(numbers), before=b.id)])
    return e.done()


# -- division by a scalar is a factor; a power is a product of copies ---------------------------
def find_div_scalar(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op != "div":
            continue
        x, c = b.inputs
        if not c.axes and x.axes and set(x.axes) == set(out_axes(d, b)) and \
                const_value(d, c) != 0:
            yield Site("div_scalar", b.id)


def div_scalar(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    x, c = b.inputs
    value = const_value(d, c)
    inverse = e.const(1 / value, before=b.id) if value is not None else \
        e.add("div", [e.const(1, before=b.id), c], (), "_", before=b.id)
    e.replace(b.id, "contract", [x, inverse])
    return e.done()


MAX_POWER = 4  # powers written out as products of up to this many copies


def find_power(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op != "pow" or b.inputs[1].axes:
            continue
        n = const_value(d, b.inputs[1])
        if isinstance(n, (int, float)) and n == int(n) and 2 <= n <= MAX_POWER and \
                set(b.inputs[0].axes) == set(out_axes(d, b)):
            yield Site("power", b.id)


def power(d: Diagram, site: Site) -> Diagram:
    """x ** n = x · x ⋯ x; when x is a product Σ_A Π F, its n copies' factors, each copy's
    summed axes renamed apart: (q·k)² = Σ_{n,m} q_n k_n q_m k_m = (q⊗q)·(k⊗k)."""
    e = Edit(d)
    b = d.box(site.box)
    u = b.inputs[0]
    n = int(const_value(d, b.inputs[1]))
    p = producer(d, u)
    factors: list[Use] = []
    for _ in range(n):
        if p is None or p.op != "contract":
            factors.append(u)
            continue
        rename = seen_as(d, u)
        for a in sorted(summed(d, p)):
            rename[a] = e.fresh_axis(a)
        factors.extend(rename_use(f, rename) for f in p.inputs)
    e.replace(b.id, "contract", factors)
    return e.done()


_SCORE = """
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
"""

_DECAY = """
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p], log_a[h]) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
  la[t, h] = {}
  y[t, h, p] = decay(la, t, s) * q * k[s, h, n] * v[s, h, p]
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
    Rule("add_zero", EXACT,
         "x + 0 = x, x - 0 = x, x + 0 · y = x (x read broadcast along axes only y had)",
         find_add_zero, add_zero, normalising=True, witnesses=(
             _SCORE + "  y[t, h, p] = v + 0\n",
             _SCORE + "  y[t, h, p] = (0 + v) * 2 - 0\n",
             _DECAY.format("log_a + 0 * index(t)"),
         )),
    Rule("mul_one", EXACT,
         "x · 1 = x, x · y⁰ = x (x read broadcast where only the 1 carried an axis)",
         find_mul_one, mul_one, normalising=True, witnesses=(
             _SCORE + "  y[t, h, p] = 1 * v\n",
             _DECAY.format("log_a * index(t) ** 0"),
             _SCORE + "  y[t, h, p] = causal(t, s) * index(s) ** 0 * v[s, h, p]\n",
         )),
    Rule("mul_zero", EXACT, "Σ_A 0 · Π F = 0: a product with a zero factor is 0",
         find_mul_zero, mul_zero, normalising=True, witnesses=(
             _SCORE + "  z[t, h, p] = 0 * v\n  y[t, h, p] = z * v + v\n",
             _SCORE + "  z[h, t, s] = causal(t, s) * k[s, h, n] * 0 * q\n"
                      "  zv[t, h, p] = z * v[s, h, p]\n  y[t, h, p] = zv + v\n",
         )),
    Rule("pow_unit", EXACT, "x¹ = x, x⁰ = 1", find_pow_unit, pow_unit, normalising=True,
         witnesses=(_SCORE + "  y[t, h, p] = v ** 1 + v ** 0\n",)),
    Rule("fold_numbers", EXACT,
         "arithmetic on numbers is a number, and the numbers among a product's factors "
         "multiply into one: 2 · x · 3 = 6 · x, 1 / sqrt(4) = 0.5 (in float64)",
         find_fold_numbers, fold_numbers, normalising=True, witnesses=(
             _SCORE + "  y[t, h, p] = 2 * v * 3 * (1 / sqrt(4)) ** 2\n",
         )),
    Rule("div_scalar", EXACT,
         "x / c = x · (1/c) for a scalar c: dividing by a scalar is a factor of a product",
         find_div_scalar, div_scalar, normalising=True, witnesses=(
             _SCORE + "  y[t, h, p] = v / 2\n",
             _SCORE + "  y[t, h, p] = (v + 1) / sqrt(p)\n",
         )),
    Rule("power", EXACT,
         "xⁿ = x ⋯ x (n ≤ 4), a power of a product is the product of copies: "
         "(q·k)² = Σ_{n,m} q_n k_n q_m k_m = (q⊗q)·(k⊗k)",
         find_power, power, normalising=True, witnesses=(
             _SCORE + "  score[h, t, s] = q * k[s, h, n]\n"
                      "  y[t, h, p] = causal(t, s) * (1 + score + score ** 2 / 2) * v[s, h, p]\n",
             _SCORE + "  y[t, h, p] = v ** 3\n",
         )),
]
