"""The diagram IR every consumer reads: wires (tensors with named axes), boxes (maps) and diagrams.

A `Diagram` is a typed DAG: boxes in a topological order, wires by name, the anatomy's
dims, and a networkx view (`Diagram.graph`) for graph algorithms. Composite boxes
(`call`, `slot`) refer to other diagrams of the same `Program` by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import networkx as nx

from .errors import UNKNOWN, AnatError, SourceLoc, did_you_mean

Axes = tuple[str, ...]


@dataclass(frozen=True)
class Use:
    """A box input: a wire, seen by the box through axis names (renamed positionally)."""

    wire: str
    axes: Axes


@dataclass(frozen=True)
class Wire:
    """A tensor with named axes. `role` is input, param, output or internal."""

    name: str
    axes: Axes
    role: str = "internal"
    loc: SourceLoc = field(default=UNKNOWN, compare=False, repr=False)

    @property
    def anonymous(self) -> bool:
        """Wires the parser made for nested sub-expressions; the printer inlines them."""
        return self.name.startswith("_")


@dataclass(frozen=True)
class Box:
    """One box of the diagram: an operation from inputs to outputs, with attributes.

    `id` is stable: the name of the box's first output wire.
    `attrs` is a sorted tuple of (key, value) pairs, values being plain data.
    """

    op: str
    inputs: tuple[Use, ...]
    outputs: tuple[str, ...]
    attrs: tuple[tuple[str, Any], ...] = ()
    loc: SourceLoc = field(default=UNKNOWN, compare=False, repr=False)

    @property
    def id(self) -> str:
        return self.outputs[0]

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default


def freeze_attrs(attrs: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    def freeze(v):
        if isinstance(v, list):
            return tuple(freeze(x) for x in v)
        return v
    return tuple(sorted((k, freeze(v)) for k, v in attrs.items() if v is not None))


def implicit_param_name(role: str, stem: str, counts: dict[str, int]) -> str:
    """The name of a parameter a box makes for itself (`linear`'s `w_q`, a norm's
    `scale_o`): role and statement target, numbered from the second one on. The parser
    and the printer both call this, so printed text re-parses to the same names."""
    base = f"{role}_{stem}"
    counts[base] = counts.get(base, 0) + 1
    return base if counts[base] == 1 else f"{base}_{counts[base]}"


@dataclass(frozen=True)
class Port:
    name: str
    axes: Axes
    loc: SourceLoc = field(default=UNKNOWN, compare=False, repr=False)


@dataclass(frozen=True)
class Signature:
    """Inputs and outputs of an anatomy or a slot interface."""

    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]

    def __str__(self) -> str:
        def ports(ps):
            return ", ".join(f"{p.name}[{', '.join(p.axes)}]" for p in ps)
        return f"({ports(self.inputs)}) -> {ports(self.outputs)}"


def time_axis_of(signature: Signature) -> str | None:
    """The sequence axis of an anatomy: by convention the first axis of its first input
    that has axes (a scalar input, such as a temperature, may come first); None when no
    input has axes. The one definition: the loader, the checks and the lowering ask it."""
    for p in signature.inputs:
        if p.axes:
            return p.axes[0]
    return None


@dataclass(frozen=True)
class Dim:
    """A declared size: `dims h = 8, p = d / h`. `expr` is None for a dim without default."""

    name: str
    expr: Any  # anatomy.dims.DimExpr | None
    loc: SourceLoc = field(default=UNKNOWN, compare=False, repr=False)


@dataclass(frozen=True)
class Diagram:
    """One anatomy: a typed DAG of boxes and wires with a signature and dims.

    `to_text()`, `str()`, `check(**dims)`, `to_svg()` are conveniences that anatomy.views
    attaches (the IR itself imports no printer, checker or renderer).

    Frozen: `shapes` (anatomy.shapes.Shapes at its dims) and `program` (the Program whose
    anatomies its composite boxes name) are given at construction; a changed diagram is a
    new one (`replace`, `dataclasses.replace`, `anatomy.shapes.checked`)."""

    name: str
    signature: Signature
    dims: dict[str, Dim]
    wires: dict[str, Wire]
    boxes: list[Box]
    fills: str | None = None
    file: str = "<string>"
    doc: str = ""
    loc: SourceLoc = field(default=UNKNOWN, compare=False, repr=False)
    program: Any = field(default=None, compare=False, repr=False)
    shapes: Any = field(default=None, compare=False, repr=False)  # Shapes at default dims

    # -- navigation -------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[Port, ...]:
        return self.signature.inputs

    @property
    def outputs(self) -> tuple[Port, ...]:
        return self.signature.outputs

    @property
    def time_axis(self) -> str | None:
        """The sequence axis (`time_axis_of` its signature)."""
        return time_axis_of(self.signature)

    def box(self, box_id: str) -> Box:
        for b in self.boxes:
            if b.id == box_id:
                return b
        raise KeyError(box_id)

    def producer(self, wire: str) -> Box | None:
        return self._producers.get(wire)

    def consumers(self, wire: str) -> list[Box]:
        return self._consumers.get(wire, [])

    def params(self) -> Iterator[Box]:
        return (b for b in self.boxes if b.op == "param")

    @cached_property
    def _producers(self) -> dict[str, Box]:
        return {w: b for b in self.boxes for w in b.outputs}

    @cached_property
    def _consumers(self) -> dict[str, list[Box]]:
        out: dict[str, list[Box]] = {}
        for b in self.boxes:
            for u in b.inputs:
                out.setdefault(u.wire, []).append(b)
        return out

    @cached_property
    def graph(self) -> nx.MultiDiGraph:
        """Boxes and ports as nodes, wires as edges (key = wire name, `axes` = axes at use)."""
        g = nx.MultiDiGraph(name=self.name)
        for p in self.inputs:
            g.add_node(f"in:{p.name}", kind="input", wire=p.name)
        for b in self.boxes:
            g.add_node(b.id, kind="box", box=b)
        for p in self.outputs:
            g.add_node(f"out:{p.name}", kind="output", wire=p.name)
        source = {p.name: f"in:{p.name}" for p in self.inputs}
        source.update(self._producers)
        for b in self.boxes:
            for u in b.inputs:
                src = source[u.wire]
                g.add_edge(src if isinstance(src, str) else src.id, b.id, key=u.wire,
                           axes=u.axes)
        for p in self.outputs:
            src = source[p.name]
            g.add_edge(src if isinstance(src, str) else src.id, f"out:{p.name}", key=p.name,
                       axes=p.axes)
        return g

    # -- structure ----------------------------------------------------------------------
    def structure(self) -> tuple:
        """A location-free value equal for identical diagrams (used for round-trip checks).

        Anonymous wires are renumbered in box order so that equal diagrams compare equal
        whatever counter the parser used.
        """
        rename: dict[str, str] = {}
        for b in self.boxes:
            for w in b.outputs:
                if self.wires[w].anonymous:
                    rename[w] = f"_{len(rename) + 1}"

        def r(w: str) -> str:
            return rename.get(w, w)
        boxes = tuple(
            (b.op, tuple((r(u.wire), u.axes) for u in b.inputs), tuple(map(r, b.outputs)),
             b.attrs)
            for b in self.boxes)
        wires = tuple(sorted((r(w.name), w.axes, w.role) for w in self.wires.values()))
        dims = tuple((d.name, str(d.expr)) for d in self.dims.values())
        return (self.name, str(self.signature), self.fills, dims, wires, boxes)

    def replace(self, **changes: Any) -> Diagram:
        """A copy with some fields changed (caches are not carried over); its shapes, which
        describe the old boxes, are dropped unless given."""
        return replace(self, **{"shapes": None, **changes})

@dataclass
class Program:
    """A loaded .anat file: its anatomies and slot interfaces (including those it `use`s)."""

    anatomies: dict[str, Diagram]
    slots: dict[str, Signature]
    file: str = "<string>"
    slot_locs: dict[str, SourceLoc] = field(default_factory=dict)
    own: tuple[str, ...] = ()

    def __post_init__(self):
        """Its own anatomies are bound to it (`Diagram.program`): copies that name it."""
        for name in self.own:
            d = self.anatomies[name]
            if d.program is not self:
                self.anatomies[name] = replace(d, program=self)

    def __getitem__(self, name: str) -> Diagram:
        try:
            return self.anatomies[name]
        except KeyError:
            raise AnatError(f"no anatomy named `{name}` in {self.file}",
                            hint=did_you_mean(name, self.anatomies, "anatomy")) from None

    def __contains__(self, name: str) -> bool:
        return name in self.anatomies

    def __iter__(self) -> Iterator[Diagram]:
        """The anatomies defined in this file itself (not those it uses), in source order."""
        return (self.anatomies[n] for n in self.own)

    def fillers(self, slot: str) -> list[Diagram]:
        """Every anatomy declared to fill `slot`."""
        return [d for d in self.anatomies.values() if d.fills == slot]
