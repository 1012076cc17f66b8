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
