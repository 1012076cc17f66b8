"""Causality decided from the diagram: may an output at time t depend on inputs after t?

A recurrent (step) form, and a search on a causal task, need every output at time t to
depend only on inputs at times <= t. This module decides that by dataflow over the IR,
without running anything: each wire gets a `Reach`, an over-approximation of the input
positions that one of its entries may depend on.

- `Reach.bound` is a set of the wire's time-like axes: the entry at index (.., a=i, b=j, ..)
  depends on inputs at positions <= max(i, j, ...) only. The empty set: on no position at
  all (parameters, constants, masks, `index`). None: on the whole sequence (the future, or
  its length), with `why` naming the box where that first happened.
- `Reach.zero_unless` is a set of triples (key, query, c): the entry is 0 unless
  key <= query - c. Masks and decays make these (`causal(t, s)`: 0 unless s <= t - 0);
  products keep them; a shift along either axis moves c.
- `Reach.band` describes a 0/1 mask of positions exactly: (query, key, lo, hi) says the
  entry is 1 where lo <= query - key <= hi and 0 elsewhere, so that the difference of two
  masks (`causal(t, s) - window(t, s, size=1)`: keys strictly before the query) keeps
  its bound.

A sum or a normaliser over a time-like axis a is bounded when a factor is 0 unless
a <= b - c, c >= 0, for an axis b that is kept: the entry at b then reads positions <= b only. Without such a
bound it reads the whole axis, and so the whole sequence (even a sum of a constant along a
counts the sequence's length). Time-like axes are those of the diagram's time axis's size
class (t and every key axis s unified with it by the shape checker).

`check_causal(diagram, shapes)` raises AnatError naming the box (and its source line) that
lets an output see later tokens; the step form (anatomy.lowering) and the search's
exclusion of acausal variants (anatomy.search) both call it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import AnatError
from .ir import Box, Diagram
from .ops import MASK_BANDS, OPS


@dataclass(frozen=True)
class Reach:
    """What one entry of a wire may depend on (see the module docstring)."""

    bound: frozenset[str] | None
    zero_unless: frozenset[tuple[str, str, float]] = frozenset()
    why: tuple[Box, str] | None = None
    band: tuple[str, str, float, float] | None = None

    @property
    def whole(self) -> bool:
        return self.bound is None

    def renamed(self, rename: dict[str, str]) -> Reach:
        if self.bound is None:
            return self
        r = rename.get
        band = None
        if self.band is not None:
            q, k, lo, hi = self.band
            band = (r(q, q), r(k, k), lo, hi)
        return Reach(frozenset(r(a, a) for a in self.bound),
                     frozenset((r(k, k), r(q, q), c) for k, q, c in self.zero_unless),
                     self.why, band)


NOTHING = Reach(frozenset())


def whole(box: Box, why: str) -> Reach:
    return Reach(None, why=(box, why))


def mask(q: str, k: str, lo: float, hi: float) -> Reach:
    """The 0/1 mask that is 1 where lo <= q - k <= hi."""
    zero = frozenset({(k, q, lo)}) if lo > -INF else frozenset()
    return Reach(frozenset(), zero, band=(q, k, lo, hi))


def band_difference(a, b):
    """The band of mask a - mask b, when b lies inside a at one of its ends (else None)."""
    if a is None or b is None or a[:2] != b[:2] or not (a[2] <= b[2] and b[3] <= a[3]):
        return None
    if a[2] == b[2] and b[3] < a[3]:
        return (*a[:2], b[3] + 1, a[3])
    if a[3] == b[3] and a[2] < b[2]:
        return (*a[:2], a[2], b[2] - 1)
    return None


INF = float("inf")


def union(reaches, zero_unless=frozenset()) -> Reach:
    """The reach of an entry computed from entries of all of `reaches` at the same index."""
    bound: set[str] = set()
    for r in reaches:
        if r.whole:
            return r
        bound |= r.bound
    return Reach(frozenset(bound), frozenset(zero_unless))


def fact(op: str) -> str:
    """How a box's output entry depends on positions: its op contract's `causal` fact
    (anatomy.ops), or, for the language's own boxes, "product" (contract, linear), "call",
    "slot", "none" (param, const) and "pointwise" (arithmetic)."""
    if op in ("contract", "linear"):
        return "product"
    if op in OPS:
        return OPS[op].causal
    return {"param": "none", "const": "none", "call": "call", "slot": "slot"}.get(op,
                                                                                "pointwise")


class Analysis:
    """Reaches of every wire of one diagram, given the reaches of its inputs."""

    def __init__(self, d: Diagram, shapes, inputs: dict[str, Reach], memo: dict):
        self.d, self.shapes, self.memo = d, shapes, memo
        self.time = shapes.sizes.find(d.time_axis) if d.time_axis is not None else None
        self.reach: dict[str, Reach] = dict(inputs)

    def timelike(self, axis: str) -> bool:
        return self.time is not None and self.shapes.sizes.find(axis) == self.time

    def run(self) -> dict[str, Reach]:
        for box in self.d.boxes:
            outs = self.box(box)
            for wire, r in zip(box.outputs, outs):
                axes = set(self.d.wires[wire].axes)
                if not r.whole:
                    lost = sorted(r.bound - axes)
                    if lost:  # a box that drops a time-like axis without saying how
                        r = whole(box, f"drops the axis {lost[0]} along which it reads")
                    else:
                        r = Reach(r.bound, frozenset(p for p in r.zero_unless
                                                     if {p[0], p[1]} <= axes), band=r.band)
                self.reach[wire] = r
        return self.reach

    def use(self, box: Box, i: int) -> Reach:
        u = box.inputs[i]
        r = self.reach[u.wire]
        return r.renamed(dict(zip(self.d.wires[u.wire].axes, u.axes)))

    # -- one box ----------------------------------------------------------------------------
    def box(self, box: Box) -> list[Reach]:
        """The reaches of a box's outputs, by its op's causal fact (`fact`)."""
        ins = [self.use(box, i) for i in range(len(box.inputs))]
        out_axes = self.d.wires[box.outputs[0]].axes
        return getattr(self, f"_{fact(box.op)}")(box, ins, out_axes)

    # -- one method per causal fact (anatomy.ops.CAUSAL_FACTS, and the language's own boxes)
    def _none(self, box: Box, ins, out_axes) -> list[Reach]:
        return [NOTHING]

    def _mask(self, box: Box, ins, out_axes) -> list[Reach]:
        q, k = box.attr("along")
        return [mask(q, k, *MASK_BANDS[box.op](dict(box.attrs)))]

    def _length(self, box: Box, ins, out_axes) -> list[Reach]:
        if self.timelike(box.attr("axis")):
            return [whole(box, "is the sequence's length, known only at its end")]
        return [NOTHING]

    def _decay_mask(self, box: Box, ins, out_axes) -> list[Reach]:
        q, k = box.attr("along")
        (log_a,) = ins
        if log_a.whole:
            return [log_a]
        # the entry (t, s) reads log_a at positions s < i <= t: bounded by t where s <= t,
        # and 0 elsewhere
        return [Reach(log_a.bound, frozenset({(k, q, 0)}))]

    def _product(self, box: Box, ins, out_axes) -> list[Reach]:
        """contract, and linear (its input and weight, then its bias)."""
        factors = ins[:2] if box.op == "linear" else ins
        product = union(factors, frozenset().union(*(f.zero_unless for f in factors
                                                      if not f.whole)))
        if box.op == "linear" and len(ins) > 2:  # the bias
            product = union([product, ins[2]], product.zero_unless)
        return [self.summed(box, product, ins, out_axes)]

    def _normaliser(self, box: Box, ins, out_axes) -> list[Reach]:
        return [self.normalised(box, ins)]

    def _norm(self, box: Box, ins, out_axes) -> list[Reach]:
        axes = box.attr("along")
        if any(self.timelike(a) for a in axes):
            return [whole(box, f"normalises over {', '.join(axes)}, which runs along the "
                               "whole sequence")]
        return [union(ins)]

    def _reverse(self, box: Box, ins, out_axes) -> list[Reach]:
        (axis,) = box.attr("along")
        if self.timelike(axis):
            return [whole(box, f"along {axis} reverses time: position i reads position "
                               "n - 1 - i")]
        return [union(ins, ins[0].zero_unless)]

    def _shift(self, box: Box, ins, out_axes) -> list[Reach]:
        return [self.shifted(box, ins[0])]

    def _recurrence(self, box: Box, ins, out_axes) -> list[Reach]:
        """Recurrences along their axis: position i reads positions <= i of every input."""
        return [self.summed(box, union(ins), ins, out_axes)]

    def _attention(self, box: Box, ins, out_axes) -> list[Reach]:
        """Fused softmax attention: a sum over its key axis s, bounded by its query axis t
        when causal (a window too), else every position reads every other."""
        t, s = box.attr("along")
        zero = frozenset({(s, t, 0)}) if box.attr("causal") else frozenset()
        return [self.summed(box, union(ins, zero), ins, out_axes)]

    def _same_position(self, box: Box, ins, out_axes) -> list[Reach]:
        return [union(ins, ins[0].zero_unless if not ins[0].whole else frozenset())]

    def _sum(self, box: Box, ins, out_axes) -> list[Reach]:
        """concat, split, reshape: summed over the time-like axes the output lacks."""
        return [self.summed(box, union(ins), ins, out_axes)] * len(box.outputs)

    def _slot(self, box: Box, ins, out_axes) -> list[Reach]:
        return [whole(box, f"is the open slot {box.attr('slot')}: fill it first")] \
            * len(box.outputs)

    def _call(self, box: Box, ins, out_axes) -> list[Reach]:
        return self.call(box, ins)

    def _pointwise(self, box: Box, ins, out_axes) -> list[Reach]:
        """Elementwise arithmetic and activations: the same index of every input; zeros kept
        by f(0) = 0 maps, by a quotient's numerator, and by a sum where every term has them
        (a difference of two masks is a mask)."""
        op, kept = box.op, frozenset()
        zero_preserving = op == "neg" or op in OPS and OPS[op].zero_preserving
        if zero_preserving and not ins[0].whole or op == "div" and not ins[0].whole:
            kept = ins[0].zero_unless
        elif op in ("add", "sub") and not any(r.whole for r in ins):
            kept = frozenset.intersection(*(r.zero_unless for r in ins))
            if op == "sub":
                band = band_difference(ins[0].band, ins[1].band)
                if band is not None:
                    return [mask(*band)]
        return [self.summed(box, union(ins, kept), ins, out_axes)]

    def shifted(self, box: Box, x: Reach) -> Reach:
        """shift(x, a, by=n): the entry at a reads x at a - n (0 before the start)."""
        (axis,) = box.attr("along")
        n = box.attr("by", 1)
        if x.whole or not self.timelike(axis):
            return x
        zero = frozenset((k, q, c - n if k == axis else c + n if q == axis else c)
                         for k, q, c in x.zero_unless)
        if n < 0 and axis in x.bound:
            return whole(box, f"by {n} along {axis} reads later positions")
        return Reach(x.bound, zero)

    def summed(self, box: Box, r: Reach, ins: list[Reach], out_axes) -> Reach:
        """`r` (an entry over the inputs' axes), summed over the time-like input axes that the
        output lacks."""
        gone = {a for u in box.inputs for a in u.axes if a not in out_axes and self.timelike(a)}
        if r.whole or not gone:
            return r
        bound = set(r.bound)
        for a in sorted(gone):
            upper = [q for k, q, c in r.zero_unless if k == a and q in out_axes and c >= 0]
            if not upper:
                what = {"contract": "sums", "linear": "maps along"}.get(box.op, "folds")
                return whole(box, f"{what} over {a} with no mask bounding {a} by a kept "
                                  f"time axis: every position reads every other")
            bound.discard(a)
            bound.add(upper[0])
        zero = frozenset(p for p in r.zero_unless if not {p[0], p[1]} & gone)
        return Reach(frozenset(bound), zero)

    def normalised(self, box: Box, ins: list[Reach]) -> Reach:
        """softmax / normalise / l2normalise along one axis: an entry reads the whole row."""
        (axis,) = box.attr("along")
        x = ins[0]
        if box.op == "softmax":
            masks = ins[1:]
            zero = frozenset().union(*(m.zero_unless for m in masks if not m.whole))
        else:  # x / sum(x) and x / |x|: a 0 entry is 0 and adds nothing to the row
            masks = []
            zero = x.zero_unless if not x.whole else frozenset()
        r = union([x, *masks], zero)
        if r.whole or not self.timelike(axis):
            return r
        upper = [q for k, q, c in zero if k == axis and c >= 0]
        if not upper:
            hint = "a mask= that bounds it" if box.op == "softmax" else "a masked input"
            return whole(box, f"over {axis} with no mask bounding {axis} by the query axis "
                              f"({hint}): every position sees every other")
        return Reach(r.bound | {upper[0]}, zero)

    def call(self, box: Box, ins: list[Reach]) -> list[Reach]:
        callee = self.d.program.anatomies[box.attr("anatomy")]
        inner_shapes = self.shapes.callees[box.id]
        bound_ins = {}
        for port, u, r in zip(callee.inputs, box.inputs, ins):
            bound_ins[port.name] = r.renamed(dict(zip(u.axes, port.axes)))
        key = (callee.name, id(inner_shapes),
               tuple((n, r.bound, r.zero_unless, id(r.why)) for n, r in bound_ins.items()))
        if key not in self.memo:  # once per callee and input reaches: linear in program size
            reach = Analysis(callee, inner_shapes, bound_ins, self.memo).run()
            self.memo[key] = [reach[p.name] for p in callee.outputs]
        return [r.renamed(dict(zip(port.axes, self.d.wires[wire].axes)))
                for port, wire, r in zip(callee.outputs, box.outputs, self.memo[key])]


def reaches(d: Diagram, shapes) -> dict[str, Reach]:
    """The reach of every wire of `d` (its inputs read position t at index t)."""
    analysis = Analysis(d, shapes, {}, {})
    for p in d.inputs:
        analysis.reach[p.name] = Reach(frozenset(a for a in p.axes if analysis.timelike(a)))
    return analysis.run()


def acausal_reason(d: Diagram, shapes) -> tuple[Box, str] | None:
    """The box (and why) through which an output of `d` may see later inputs; None when
    every output at time t depends on inputs at times <= t only."""
    t = d.time_axis
    if t is None:
        return None
    reach = reaches(d, shapes)
    for p in d.outputs:
        r = reach[p.name]
        if r.whole:
            return r.why
        extra = [a for a in r.bound if a != t]
        if extra:
            box = d.producer(p.name)
            why = f"gives output {p.name} an entry along {extra[0]} that reads positions " \
                  f"up to {extra[0]}"
            return box, why
    return None


def check_causal(d: Diagram, shapes, purpose: str = "has no recurrent form") -> None:
    """Raise AnatError naming the box through which an output may see later tokens."""
    found = acausal_reason(d, shapes)
    if found is None:
        return
    box, why = found
    raise AnatError(f"{d.name} {purpose}: `{box.op}` (making {box.outputs[0]}) {why}",
                    box.loc, hint="an output at time t may depend only on inputs at times "
                                  "<= t: bound the key axis with causal(t, s), window or "
                                  "decay, or use the parallel or chunked form")
