"""Reading diagrams for rewriting: who reads a wire, how a box sees its inputs' axes, which
axes a contraction sums. Shared by every rule's matcher."""

from __future__ import annotations

from anatomy.ir import Box, Diagram, Use


def readers(d: Diagram, wire: str) -> int:
    """How many times the wire is read (by boxes, and as an output port)."""
    n = sum(u.wire == wire for b in d.boxes for u in b.inputs)
    return n + sum(p.name == wire for p in d.outputs)


def read_once(d: Diagram, wire: str) -> bool:
    """The wire feeds exactly one box input and no output port: its box can be rewritten
    in place without changing anything else."""
    return readers(d, wire) == 1 and d.wires[wire].role != "input"


def producer(d: Diagram, u: Use) -> Box | None:
    return d.producer(u.wire)


def seen_as(d: Diagram, u: Use) -> dict[str, str]:
    """The producer's axis names -> the reading box's names, for one input."""
    return dict(zip(d.wires[u.wire].axes, u.axes))


def out_axes(d: Diagram, b: Box) -> tuple[str, ...]:
    return d.wires[b.outputs[0]].axes


def summed(d: Diagram, b: Box) -> set[str]:
    """Axes a box's inputs have that its output lacks (what a contraction sums)."""
    return {a for u in b.inputs for a in u.axes} - set(out_axes(d, b))


def const_value(d: Diagram, u: Use):
    """The number a wire holds when it is a `const` box's output, else None."""
    p = d.producer(u.wire)
    if p is not None and p.op == "const":
        return p.attr("value")
    return None


def size(d: Diagram, axis: str) -> int | None:
    return d.shapes.size(axis) if d.shapes is not None else None


def reads_as(d: Diagram, wire: str, to_axes: tuple[str, ...]) -> bool:
    """Whether every reader of `wire` may read instead a value that has only the axes
    `to_axes` of the wire (named as the wire names them) and is constant along the others:
    each missing axis must be one the reader broadcasts along without changing a count or a
    size: an axis another input of a product, sum or quotient carries, or the query axis of
    a decay (a constant decay). Never an output port."""
    if any(p.name == wire for p in d.outputs):
        return False
    own = d.wires[wire].axes
    for b in d.consumers(wire):
        for i, u in enumerate(b.inputs):
            if u.wire != wire:
                continue
            missing = {x for a, x in zip(own, u.axes) if a not in to_axes}
            if not missing:
                continue
            others = {a for v in b.inputs if v.wire != wire for a in v.axes}
            if b.op in ("add", "sub", "div", "pow", "contract"):
                ok = missing <= others
            elif b.op == "decay":
                ok = missing == {b.attr("along")[0]}
            else:
                ok = False
            if not ok:
                return False
    return True
