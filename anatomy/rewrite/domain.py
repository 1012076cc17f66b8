"""The domain of a claim: the inputs both sides accept.

A claim A = B compares the two diagrams on the same inputs, matched port by port and axis
by axis. Where one side's signature ties together axes the other side keeps apart, the
claim is about inputs on which those axes are the same: `cores.anat:ssd_core(q[t, g, n],
..., v[t, h, p])` against a core `(q[t, h, n], ..., v[t, h, p])` is a claim at g = h. The
prover reads such a side with the tied axes renamed to one (`share(q, h, h)` is then an
identity), and says so; `verify_proof` applies the same reading before replaying.
"""

from __future__ import annotations

from anatomy.ir import Box, Diagram, Port, Signature, Use, Wire, freeze_attrs
from anatomy.shapes import checked

from .rules.structure import rename_attrs


def _port_axes(d: Diagram) -> list[str]:
    return [a for p in d.inputs + d.outputs for a in p.axes]


def tied_axes(a: Diagram, b: Diagram) -> tuple[dict[str, str], dict[str, str]]:
    """For each side, the renaming {axis: the axis it is tied to} that the other side's
    signature implies (empty when the signatures tie the same axes). Only free axes (no
    declared dim, no size) are tied, and never two axes that one wire carries together."""
    a, b = _checked(a), _checked(b)
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for pa, pb in zip(a.inputs + a.outputs, b.inputs + b.outputs):
        for x, y in zip(pa.axes, pb.axes):
            parent[find(("b", y))] = find(("a", x))
    names: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for side, d in (("a", a), ("b", b)):
        for axis in dict.fromkeys(_port_axes(d)):
            names.setdefault(find((side, axis)), []).append((side, axis))
    renames = []
    for side, d in (("a", a), ("b", b)):
        rename: dict[str, str] = {}
        for members in names.values():
            own = [x for s, x in members if s == side]
            other = {x for s, x in members if s != side}
            rep = next((x for x in own if x in other), own[0]) if own else None
            rename.update({x: rep for x in own if x != rep and _may_tie(d, x, rep)})
        renames.append(rename)
    return renames[0], renames[1]


def _may_tie(d: Diagram, x: str, y: str) -> bool:
    free = all(n not in d.dims and d.shapes.size(n) is None for n in (x, y))
    apart = not any(x in w.axes and y in w.axes for w in d.wires.values())
    return free and apart


def rename_axes(d: Diagram, rename: dict[str, str]) -> Diagram:
    """The diagram with axes renamed everywhere (ports, wires, box inputs, attributes)."""
    def axis(a: str) -> str:
        return rename.get(a, a)

    def axes(xs):
        return tuple(axis(a) for a in xs)

    signature = Signature(tuple(Port(p.name, axes(p.axes), p.loc) for p in d.inputs),
                          tuple(Port(p.name, axes(p.axes), p.loc) for p in d.outputs))
    wires = {n: Wire(w.name, axes(w.axes), w.role, w.loc) for n, w in d.wires.items()}
    boxes = [Box(b.op, tuple(Use(u.wire, axes(u.axes)) for u in b.inputs), b.outputs,
                 freeze_attrs(rename_attrs(b, axis)), b.loc) for b in d.boxes]
    return checked(d.replace(signature=signature, wires=wires, boxes=boxes),
                   dict(d.shapes.dims))


def _checked(d: Diagram) -> Diagram:
    """The diagram with its shapes at its default dims (an anatomy a file `use`s has none)."""
    if d.shapes is not None:
        return d
    return checked(d, {})


def on_common_domain(a: Diagram, b: Diagram) -> tuple[Diagram, Diagram, str]:
    """Both sides read on the inputs both accept, and a line saying which axes that tied
    ("" when none)."""
    a, b = _checked(a), _checked(b)
    ra, rb = tied_axes(a, b)
    notes = [f"{d.name}'s {x} is its {y}" for d, r in ((a, ra), (b, rb))
             for x, y in r.items()]
    a = rename_axes(a, ra) if ra else a
    b = rename_axes(b, rb) if rb else b
    note = "" if not notes else (
        "on the inputs both sides accept (their ports matched axis by axis): "
        + ", ".join(notes))
    return a, b, note
