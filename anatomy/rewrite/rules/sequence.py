"""Rules of `flip` (reverse an axis) and `shift` (move one step later, zero first): the
identities behind Hydra's quasiseparable mixer (docs/background.md §7).

The normal form pushes flips and shifts towards the inputs: through products (a flip or a
shift of a product is the product of the flipped or shifted factors that carry the axis),
through sums and pointwise maps (a shift only through maps with f(0) = 0), flips inside
shifts; a sum over an axis may flip every factor along it; two flips cancel; flipping a
decay mask along both its axes transposes it.
"""

from __future__ import annotations

from collections.abc import Iterator

from anatomy.ir import Box, Diagram, Use
from anatomy.ops import OPS

from ..edit import Edit, rename_use
from ..match import out_axes, producer, read_once, seen_as, summed
from ..site import EXACT, Rule, Site
from .masks import decay_axes

# elementwise maps (their op contracts: anatomy.ops), and those with f(0) = 0
POINTWISE = frozenset({"neg"} | {n for n, s in OPS.items() if s.kind in ("activation", "gate")})
ZERO_PRESERVING = frozenset({"neg"} | {n for n, s in OPS.items() if s.zero_preserving})


def _along(d: Diagram, flip_or_shift: Box) -> str:
    """The axis a flip/shift box acts on, named as in its input's producer."""
    u = flip_or_shift.inputs[0]
    back = {v: k for k, v in seen_as(d, u).items()}
    return back[flip_or_shift.attr("along")[0]]


def _wrap(e: Edit, u: Use, op: str, axis: str, before: str, **attrs) -> Use:
    """`op(u, axis)` on a new wire (u's axes; flip and shift keep them)."""
    return e.add(op, [u], u.axes, "_", before=before, along=(axis,), **attrs)


def _through(d: Diagram, outer: Box, ops: frozenset[str]) -> Box | None:
    """The box under a flip/shift that it may be pushed into (read only by it)."""
    u = outer.inputs[0]
    p = producer(d, u)
    if p is None or not read_once(d, u.wire) or len(p.outputs) != 1:
        return None
    return p if p.op in ops else None


# -- flip(flip(x)) = x -----------------------------------------------------------------------
def find_flip_flip(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op == "flip":
            p = producer(d, b.inputs[0])
            if p is not None and p.op == "flip" and p.attr("along")[0] == _along(d, b):
                yield Site("flip_flip", b.id)


def flip_flip(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    inner = d.producer(b.inputs[0].wire)
    e.redirect(b.id, rename_use(inner.inputs[0], seen_as(d, b.inputs[0])))
    return e.done()


# -- pushing flips and shifts into products, sums and pointwise maps ----------------------------
def _find_into(d: Diagram, op: str, rule: str) -> Iterator[Site]:
    through = frozenset({"contract", "add", "sub", "div"}) | POINTWISE if op == "flip" \
        else frozenset({"contract", "add", "sub"}) | ZERO_PRESERVING
    for b in d.boxes:
        if b.op != op:
            continue
        p = _through(d, b, through)
        if p is None:
            continue
        axis = _along(d, b)
        if op == "shift" and p.op in ("add", "sub") and \
                any(axis not in u.axes for u in p.inputs):
            continue  # a term constant along the axis is not zero at the start once shifted
        yield Site(rule, b.id)


def _push_into(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    p = d.producer(b.inputs[0].wire)
    axis = _along(d, b)
    attrs = {"by": b.attr("by", 1)} if b.op == "shift" else {}
    inputs = [_wrap(e, u, b.op, axis, p.id, **attrs) if axis in u.axes else u
              for u in p.inputs]
    e.set_inputs(p.id, inputs)
    e.redirect(b.id, b.inputs[0])
    return e.done()


def find_flip_into(d: Diagram) -> Iterator[Site]:
    return _find_into(d, "flip", "flip_into")


def find_shift_into(d: Diagram) -> Iterator[Site]:
    return _find_into(d, "shift", "shift_into")


# -- flip(shift(x, by=k)) = shift(flip(x), by=-k); along other axes they commute -----------------
def find_flip_shift(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op == "flip" and _through(d, b, frozenset({"shift"})) is not None:
            yield Site("flip_shift", b.id)


def flip_shift(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    s = d.producer(b.inputs[0].wire)
    (axis,) = s.attr("along")
    flip_axis = _along(d, b)
    by = s.attr("by", 1)
    flipped = _wrap(e, s.inputs[0], "flip", flip_axis, s.id)
    e.replace(s.id, "shift", [flipped], along=(axis,), by=-by if flip_axis == axis else by)
    e.redirect(b.id, b.inputs[0])
    return e.done()


# -- Σ_s Π f[s] = Σ_s Π flip_s(f)[s] --------------------------------------------------------
def _flipped_along(d: Diagram, u: Use, axis: str) -> bool:
    p = producer(d, u)
    return p is not None and p.op == "flip" and seen_as(d, u)[p.attr("along")[0]] == axis


def find_flip_sum(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op != "contract":
            continue
        for axis in sorted(summed(d, b)):
            carrying = [u for u in b.inputs if axis in u.axes]
            flipped = sum(_flipped_along(d, u, axis) for u in carrying)
            if 2 * flipped > len(carrying):
                yield Site("flip_sum", b.id, (axis,))


def flip_sum(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    (axis,) = site.params
    inputs = []
    for u in b.inputs:
        if _flipped_along(d, u, axis):
            u = rename_use(producer(d, u).inputs[0], seen_as(d, u))
        elif axis in u.axes:
            back = {v: k for k, v in seen_as(d, u).items()}
            u = rename_use(_wrap(e, Use(u.wire, d.wires[u.wire].axes), "flip", back[axis],
                                 b.id), seen_as(d, u))
        inputs.append(u)
    e.set_inputs(b.id, inputs)
    return e.done()


# -- flipping a decay mask along both axes transposes it ----------------------------------------
def find_decay_flip(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op != "flip":
            continue
        inner = _through(d, b, frozenset({"flip"}))
        if inner is None:
            continue
        decay = _through(d, inner, frozenset({"decay"}))
        if decay is None:
            continue
        axes = {_along(d, inner), _along_into(d, b, inner)}
        if axes == set(decay.attr("along")):
            yield Site("decay_flip", b.id)


def _along_into(d: Diagram, outer: Box, inner: Box) -> str:
    """The outer flip's axis named as in the box under the inner flip."""
    a = _along(d, outer)  # in the inner flip's names (its output = its input's names)
    back = {v: k for k, v in seen_as(d, inner.inputs[0]).items()}
    return back[a]


def decay_flip(d: Diagram, site: Site) -> Diagram:
    """flip_t flip_s L(a)[t, s] = L(c)[s, t] with c = shift(flip(a)) along t (a constant
    decay needs neither): the upper-triangular decay of the reversed sequence."""
    e = Edit(d)
    b = d.box(site.box)
    inner = d.producer(b.inputs[0].wire)
    decay = d.producer(inner.inputs[0].wire)
    t, s = decay.attr("along")
    log_a = decay.inputs[0]
    if t in log_a.axes:
        flipped = _wrap(e, log_a, "flip", t, decay.id)
        c = _wrap(e, flipped, "shift", t, decay.id, by=1)
        log_a = rename_use(c, {t: s})
    mask = e.add("decay", [log_a], decay_axes(log_a.axes, s, t), "_", before=decay.id,
                 along=(s, t))
    # decay's names -> the outer flip's names
    to_inner = seen_as(d, inner.inputs[0])
    to_outer = seen_as(d, b.inputs[0])
    rename = {a: to_outer[to_inner[a]] for a in out_axes(d, decay)}
    e.redirect(b.id, rename_use(mask, rename))
    return e.done()


_SEQ = """
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h]) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
"""

RULES = [
    Rule("flip_flip", EXACT, "flip(flip(x)) = x", find_flip_flip, flip_flip,
         normalising=True, witnesses=(_SEQ + "  y[t, h, p] = flip(flip(v, t), t)\n",)),
    Rule("flip_into", EXACT,
         "flip(Π f) = Π flip(f), flip(x ± y) = flip(x) ± flip(y), flip(f(x)) = f(flip(x)): "
         "a flip moves onto the factors, terms and arguments that carry its axis",
         find_flip_into, _push_into, normalising=True, witnesses=(
             _SEQ + "  m[t, h, p] = causal(t, s) * q * k[s, h, n] * v[s, h, p]\n"
                    "  y[t, h, p] = flip(m, t)\n",
             _SEQ + "  y[t, h, p] = flip(exp(v) - v, t)\n",
         )),
    Rule("shift_into", EXACT,
         "shift(Π f) = Π shift(f) over the factors carrying its axis, shift(x ± y) = "
         "shift(x) ± shift(y), shift(f(x)) = f(shift(x)) when f(0) = 0",
         find_shift_into, _push_into, normalising=True, witnesses=(
             _SEQ + "  m[t, h, p] = decay(log_a, t, s) * q * k[s, h, n] * v[s, h, p]\n"
                    "  y[t, h, p] = shift(m, t)\n",
             _SEQ + "  y[t, h, p] = shift(tanh(v) + v, t, by=-1)\n",
         )),
    Rule("flip_shift", EXACT,
         "flip_t(shift_t(x, by=k)) = shift_t(flip_t(x), by=-k), and flip_a(shift_b(x)) = "
         "shift_b(flip_a(x)) along different axes",
         find_flip_shift, flip_shift, normalising=True, witnesses=(
             _SEQ + "  y[t, h, p] = flip(shift(v, t), t)\n",
             _SEQ + "  y[t, h, p] = flip(shift(v, t, by=2), p)\n",
         )),
    Rule("flip_sum", EXACT,
         "Σ_s Π f[s] = Σ_s Π flip_s(f)[s]: a sum may reverse the order of its terms "
         "(applied where most factors along s are flipped)",
         find_flip_sum, flip_sum, normalising=True, witnesses=(
             _SEQ + "  kf[t, h, n] = flip(k, t)\n  vf[t, h, p] = flip(v, t)\n"
                    "  y[t, h, p] = causal(t, s) * q * kf[s, h, n] * vf[s, h, p]\n",
         )),
    Rule("decay_flip", EXACT,
         "flip_t flip_s L(a)[t, s] = L(shift(flip(a)))[s, t]: the decay mask of the "
         "reversed sequence is upper triangular",
         find_decay_flip, decay_flip, normalising=True, witnesses=(
             _SEQ + "  m[h, t, s] = flip(flip(decay(log_a, t, s), t), s)\n"
                    "  y[t, h, p] = m * q * k[s, h, n] * v[s, h, p]\n",
             _SEQ + "  param g[h] ~ uniform(-1, -0.1)\n"
                    "  m[h, t, s] = flip(flip(decay(g, t, s), s), t)\n"
                    "  y[t, h, p] = m * q * k[s, h, n] * v[s, h, p]\n",
         )),
]
