"""Editing diagrams: the small vocabulary every rewrite rule is written in.

An `Edit` starts from a diagram, adds boxes on fresh wires, replaces boxes, re-points the
consumers of a wire, and `done()` gives a new, re-checked Diagram (boxes in a topological
order that keeps the original order where it can; boxes nothing reads any more removed).
Diagrams are values: editing never changes the diagram it started from.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

from anatomy.ir import Axes, Box, Diagram, Use, Wire, freeze_attrs
from anatomy.ops import OPS
from anatomy.shapes import checked


class Edit:
    """A rewrite of one diagram in progress."""

    def __init__(self, d: Diagram):
        self.d = d
        self.wires: dict[str, Wire] = dict(d.wires)
        self.dims = dict(d.dims)
        self.boxes: list[Box] = list(d.boxes)
        self.axis_names = {a for w in d.wires.values() for a in w.axes} | \
            {a for b in d.boxes for u in b.inputs for a in u.axes} | set(d.dims)
        self.new: list[str] = []  # ids of the boxes this edit made

    # -- names ----------------------------------------------------------------------------
    def fresh_wire(self, stem: str) -> str:
        """A wire name not used in the diagram: `stem`, else `stem_2`, `stem_3`, ..."""
        if stem.startswith("_"):  # an anonymous wire stays anonymous: the next free _N
            return next(f"_{i}" for i in itertools.count(1) if f"_{i}" not in self.wires)
        for i in itertools.count(1):
            name = stem if i == 1 else f"{stem}_{i}"
            if name not in self.wires and name not in OPS:
                return name
        raise AssertionError  # pragma: no cover

    def fresh_axis(self, stem: str) -> str:
        """An axis name not used anywhere in the diagram (axis names are global classes)."""
        for i in itertools.count(2):
            name = f"{stem}{i}"
            if name not in self.axis_names:
                self.axis_names.add(name)
                return name
        raise AssertionError  # pragma: no cover

    # -- boxes ----------------------------------------------------------------------------
    def add(self, op: str, inputs: list[Use] | tuple[Use, ...], axes: Axes, stem: str,
            before: str | None = None, **attrs: Any) -> Use:
        """Add a box on a new wire named after `stem`; returns the wire's natural use."""
        name = self.fresh_wire(stem)
        self.wires[name] = Wire(name, tuple(axes), "internal")
        box = Box(op, tuple(inputs), (name,), freeze_attrs(attrs))
        self.insert(box, before)
        self.new.append(name)
        self.axis_names.update(axes)
        return Use(name, tuple(axes))

    def const(self, value: float, before: str | None = None) -> Use:
        return self.add("const", [], (), "_", before, value=value)

    def insert(self, box: Box, before: str | None = None) -> None:
        if before is None:
            self.boxes.append(box)
        else:
            self.boxes.insert(self.index(before), box)

    def index(self, box_id: str) -> int:
        for i, b in enumerate(self.boxes):
            if b.id == box_id:
                return i
        raise KeyError(box_id)

    def box(self, box_id: str) -> Box:
        return self.boxes[self.index(box_id)]

    def replace(self, box_id: str, op: str, inputs, **attrs: Any) -> None:
        """Give the box producing `box_id` a new op, inputs and attributes (same outputs)."""
        i = self.index(box_id)
        old = self.boxes[i]
        self.boxes[i] = Box(op, tuple(inputs), old.outputs, freeze_attrs(attrs), old.loc)
        self.new.append(box_id)

    def set_inputs(self, box_id: str, inputs) -> None:
        i = self.index(box_id)
        old = self.boxes[i]
        self.boxes[i] = Box(old.op, tuple(inputs), old.outputs, old.attrs, old.loc)

    def redirect(self, wire: str, to: Use) -> None:
        """Every reader of `wire` reads `to` instead. `to` is `wire`'s value seen through
        `wire`'s own axis names (positionally; `to` may lack axes it broadcasts along).
        An output port keeps its wire, which becomes a copy of `to`."""
        if any(p.name == wire for p in self.d.outputs):  # a port keeps its name: identity
            self.replace(wire, "contract", [Use(to.wire, to.axes)])
            return
        own = self.wires[wire].axes
        for i, b in enumerate(self.boxes):
            if not any(u.wire == wire for u in b.inputs):
                continue
            inputs = []
            for u in b.inputs:
                if u.wire == wire:
                    rename = dict(zip(own, u.axes))
                    u = Use(to.wire, tuple(rename[a] for a in to.axes))
                inputs.append(u)
            self.boxes[i] = Box(b.op, tuple(inputs), b.outputs, b.attrs, b.loc)

    # -- result ---------------------------------------------------------------------------
    def done(self) -> Diagram:
        ports = {p.name for p in self.d.outputs}
        boxes = _live(self.boxes, ports)
        used = {w for b in boxes for w in b.outputs} | {p.name for p in self.d.inputs}
        wires = {n: w for n, w in self.wires.items() if n in used}
        out = self.d.replace(wires=wires, boxes=_topological(boxes), dims=self.dims)
        out = checked(out, dict(self.d.shapes.dims) if self.d.shapes else {})
        return out


def _live(boxes: list[Box], outputs: set[str]) -> list[Box]:
    """The boxes the outputs depend on."""
    producer = {w: b for b in boxes for w in b.outputs}
    keep: set[str] = set()
    stack = list(outputs)
    while stack:
        w = stack.pop()
        b = producer.get(w)
        if b is None or b.id in keep:
            continue
        keep.add(b.id)
        stack.extend(u.wire for u in b.inputs)
    return [b for b in boxes if b.id in keep]


def _topological(boxes: list[Box]) -> list[Box]:
    """A topological order that keeps the given order wherever it can: of the boxes whose
    inputs are all produced, the earliest in the given order comes next (Kahn's algorithm
    with a heap; the lexicographical topological sort)."""
    producer = {w: i for i, b in enumerate(boxes) for w in b.outputs}
    readers: list[list[int]] = [[] for _ in boxes]
    waiting = [0] * len(boxes)
    for i, b in enumerate(boxes):
        for j in {producer[u.wire] for u in b.inputs if u.wire in producer}:
            readers[j].append(i)
            waiting[i] += 1
    ready = [i for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    out: list[Box] = []
    while ready:
        i = heapq.heappop(ready)
        out.append(boxes[i])
        for j in readers[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(out) != len(boxes):
        raise AssertionError("the boxes of a diagram form a cycle")  # pragma: no cover
    return out


def rename_use(u: Use, rename: dict[str, str]) -> Use:
    return Use(u.wire, tuple(rename.get(a, a) for a in u.axes))


def local_axes(d: Diagram, b: Box) -> set[str]:
    """Every axis name a box mentions: its output's and its inputs' (after renaming)."""
    return set(d.wires[b.outputs[0]].axes) | {a for u in b.inputs for a in u.axes}
