"""A Diagram as a graphviz graph: boxes as nodes, wires as edges, plates as clusters.

Conventions (docs/rendering.md): inputs at the top, outputs at the bottom; a wire is
labelled once, on the edge leaving its box (a wire used several times first meets a copy
dot, the paper's copy map, and only renamed uses are labelled again); ports and explicit
parameters name their wire themselves; implicit parameters and scalar constants are
written inside the box that uses them; composite boxes are expanded into a cluster while
`depth` allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import graphviz

from ..errors import AnatError
from ..ir import Box, Diagram
from ..shapes import Shapes, check
from . import labels
from .plates import plates
from .style import COLOURS, FONT, HIGHLIGHT, box_kind, legend

Cluster = tuple[str, ...]  # path of cluster keys, outermost first
MAX_BOXES = 5000  # graphviz takes minutes past a few thousand nodes


@dataclass
class _Picture:
    """Nodes and clusters collected while walking a diagram, emitted as DOT at the end."""

    highlight: set[str]
    nodes: list[tuple[Cluster, str, dict[str, str]]] = field(default_factory=list)
    edges: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    clusters: dict[Cluster, dict[str, str]] = field(default_factory=dict)
    kinds: set[str] = field(default_factory=set)
    ranks: dict[str, list[str]] = field(default_factory=dict)  # source/sink: top-level ports
    wire_edges: dict[str, int] = field(default_factory=dict)  # edges drawn per wire so far

    def node(self, where: Cluster, node_id: str, kind: str, label: str, **attrs: str) -> None:
        self.kinds.add(kind)
        classes = f"box {kind}"
        style = attrs.pop("style", "filled")
        if node_id in self.highlight:
            attrs.update(color=HIGHLIGHT, penwidth="3")
            classes += " highlight"
        self.nodes.append((where, node_id, {
            "id": f"box-{node_id}", "class": classes, "label": label, "style": style,
            "fillcolor": COLOURS[kind], **attrs}))

    def edge(self, tail: str, head: str, wire: str, label: str = "") -> None:
        n = self.wire_edges[wire] = self.wire_edges.get(wire, -1) + 1
        attrs = {"id": f"wire-{wire}.{n}", "class": "wire"}
        if label:
            attrs["label"] = label
        if tail in self.highlight and head in self.highlight:
            attrs.update(color=HIGHLIGHT, penwidth="2.5")
        self.edges.append((tail, head, attrs))


def build(diagram: Diagram, depth: int = 1, highlight: set[str] = frozenset()) -> graphviz.Digraph:
    """The graphviz graph of `diagram`, with composite boxes expanded `depth - 1` levels."""
    pic = _Picture(set(highlight))
    shapes = diagram.shapes or check(diagram, {})
    boxes = _drawn_boxes(shapes, depth, {})
    if boxes > MAX_BOXES:
        raise AnatError(f"{diagram.name} at depth {depth} draws {boxes:,} boxes, more than "
                        f"the {MAX_BOXES:,} a picture may hold", diagram.loc,
                        hint="draw fewer levels of composite boxes (a smaller --depth)")
    _Level(pic, diagram, shapes, prefix="", where=(), depth=depth).draw(top=True)
    g = graphviz.Digraph(diagram.name)
    g.attr(rankdir="TB", newrank="true", nodesep="0.3", ranksep="0.3", fontname=FONT,
           fontsize="11", labelloc="b", label="<" + legend(pic.kinds) + ">")
    g.attr("node", shape="box", style="filled", fontname=FONT, fontsize="11", margin="0.08,0.04",
           height="0.3", color="#495057")
    g.attr("edge", fontname=FONT, fontsize="9", color="#495057", arrowsize="0.6",
           fontcolor="#343a40")
    _emit(g, pic, ())
    for rank, node_ids in pic.ranks.items():
        with g.subgraph() as same:
            same.attr(rank=rank)
            for node_id in node_ids:
                same.node(node_id)
            for left, right in pairwise(node_ids):  # ports in signature order
                same.edge(left, right, style="invis")
    for tail, head, attrs in pic.edges:
        g.edge(tail, head, **attrs)
    return g


def _drawn_boxes(shapes: Shapes, depth: int, memo: dict) -> int:
    """How many boxes drawing at `depth` makes (each distinct callee counted once)."""
    key = (id(shapes), depth)
    if key not in memo:
        memo[key] = len(shapes.diagram.boxes) + (sum(
            _drawn_boxes(c, depth - 1, memo) for c in shapes.callees.values()) if depth > 1
            else 0)
    return memo[key]


def _emit(g: graphviz.Digraph, pic: _Picture, where: Cluster) -> None:
    """Nodes and clusters inside `where`, in the order their nodes were drawn (box order),
    which is the order dot starts from when it orders each rank."""
    done: set[Cluster] = set()
    for w, node_id, attrs in pic.nodes:
        if w == where:
            g.node(node_id, **attrs)
        elif w[:len(where)] == where and w[:len(where) + 1] not in done:
            child = w[:len(where) + 1]
            done.add(child)
            with g.subgraph(name="cluster_" + "/".join(child)) as sub:
                sub.attr(**pic.clusters[child])
                _emit(sub, pic, child)


@dataclass
class _Level:
    """One diagram drawn into the picture: the top one, or an expanded composite box."""

    pic: _Picture
    d: Diagram
    shapes: Shapes
    prefix: str
    where: Cluster
    depth: int

    def __post_init__(self) -> None:
        self.drawn = []
        for b in self.d.boxes:
            if labels.folded_param(self.d, b.id) or labels.folded_constant(self.d, b.id):
                if self.id(b.id) in self.pic.highlight:  # highlighted through its user
                    self.pic.highlight.add(self.id(self.d.consumers(b.id)[0].id))
            else:
                self.drawn.append(b)
        t = self.d.time_axis
        find = self.shapes.sizes.find
        self.sequence = {a for w in self.d.wires.values() for a in w.axes
                         if t is not None and find(a) == find(t)}
        self.plates = plates(self.d, self.drawn, self.sequence)
        self.source: dict[str, str] = {}   # wire -> the node it leaves from
        self.inputs: dict[str, list[str]] = {}  # box id -> the node taking each input

    def id(self, name: str) -> str:
        return self.prefix + name

    def draw(self, top: bool) -> None:
        for p in self.d.inputs:
            self.port(p.name, "in", top)
        for box in self.drawn:
            self.box(box)
        for p in self.d.outputs:
            self.port(p.name, "out", top)
        self.wires()

    def port(self, name: str, side: str, top: bool) -> None:
        node_id = self.id(f"{side}-{name}")
        text = labels.wire_text(self.shapes, name)
        if top:
            self.pic.node(self.where, node_id, "input", labels.node_label(text, bold=True),
                          shape="ellipse")
            self.pic.ranks.setdefault("source" if side == "in" else "sink", []).append(node_id)
        else:
            self.pic.node(self.where, node_id, "input", labels.node_label(text),
                          shape="plain", style="")
        if side == "in":
            self.source[name] = node_id

    def plate(self, box: Box) -> Cluster:
        where = self.where
        for axis, n in self.plates[box.id]:
            where = where + (self.id(axis if n == 0 else f"{axis}-{n + 1}"),)
            if where not in self.pic.clusters:
                size = self.shapes.size(axis)
                self.pic.clusters[where] = {
                    "label": axis if size is None else f"{axis} = {size}",
                    "id": "plate-" + "/".join(where), "class": "plate",
                    "style": "rounded,filled", "fillcolor": "#00000008",
                    "color": "#868e96", "labeljust": "l", "labelloc": "t",
                    "fontsize": "10", "fontcolor": "#495057", "margin": "8"}
        return where

    def box(self, box: Box) -> None:
        if box.op == "call" and self.depth > 1:
            return self.composite(box)
        kind = box_kind(box, self.d.wires[box.id].axes, self.sequence)
        node_id = self.id(box.id)
        if box.op == "param":
            init = box.attr("init")
            notes = [f"~ {init[0]}({', '.join(map(str, init[1:]))})" if init[1:] else
                     f"~ {init[0]}"]
            label = labels.node_label(labels.wire_text(self.shapes, box.id), notes)
            self.pic.node(self.where, node_id, "parameter", label, shape="box",
                          style="filled,rounded,dashed")
        else:
            notes = [f"{u.wire}[{', '.join(u.axes)}]" for u in box.inputs
                     if labels.folded_param(self.d, u.wire)]
            style = {"call": "filled,bold", "slot": "filled,dashed"}.get(box.op, "filled")
            self.pic.node(self.plate(box), node_id, kind,
                          labels.node_label(labels.box_title(self.d, box), notes), style=style)
        for w in box.outputs:
            self.source[w] = node_id
        self.inputs[box.id] = [node_id] * len(box.inputs)

    def composite(self, box: Box) -> None:
        callee = self.d.program.anatomies[box.attr("anatomy")]
        where = self.where + (self.id(box.id),)
        self.pic.clusters[where] = {
            "label": f"{box.id} = {callee.name}(…)", "id": f"composite-{self.id(box.id)}",
            "class": "composite", "style": "rounded,filled,bold",
            "fillcolor": COLOURS["composite"], "color": "#4c6ef5", "labeljust": "l",
            "labelloc": "t", "fontsize": "10"}
        self.pic.kinds.add("composite")
        inner = _Level(self.pic, callee, self.shapes.callees[box.id],
                       prefix=self.id(box.id) + ".", where=where, depth=self.depth - 1)
        inner.draw(top=False)
        self.inputs[box.id] = [inner.id(f"in-{p.name}") for p in callee.inputs]
        for w, p in zip(box.outputs, callee.outputs):
            self.source[w] = inner.id(f"out-{p.name}")

    def wires(self) -> None:
        """Edges, in box order: a wire's first edge carries its label; a wire with several
        uses goes through a copy dot first."""
        uses: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for box in self.drawn:
            for u, head in zip(box.inputs, self.inputs[box.id]):
                if not (labels.folded_param(self.d, u.wire)
                        or labels.folded_constant(self.d, u.wire)):
                    uses.setdefault(u.wire, []).append((head, u.axes))
        for p in self.d.outputs:
            uses.setdefault(p.name, []).append((self.id(f"out-{p.name}"), None))
        for box in self.drawn:
            for wire in box.outputs:
                if wire not in uses:  # an unused output ends in the paper's discard dot
                    end = self.id(f"discard-{wire}")
                    self.pic.nodes.append((self._where_of(self.source[wire]), end, {
                        "id": end, "class": "discard", "shape": "point", "width": "0.1",
                        "style": "filled", "fillcolor": "white", "label": ""}))
                    uses[wire] = [(end, None)]
        for wire, heads in uses.items():
            tail = self.source[wire]
            named_by_tail = self.d.producer(wire) is None or self.d.producer(wire).op == "param"
            if len(heads) > 1 and not named_by_tail:
                dot = self.id(f"copy-{wire}")
                self.pic.nodes.append((self._where_of(tail), dot, {
                    "id": dot, "class": "copy", "shape": "point", "width": "0.07",
                    "label": ""}))
                anonymous = self.d.wires[wire].anonymous
                self.pic.edge(tail, dot, self.id(wire),
                              "" if anonymous else labels.wire_text(self.shapes, wire))
                tail, named_by_tail = dot, True
            for head, axes in heads:
                renamed = axes is not None and axes != self.d.wires[wire].axes
                is_out_port = head == self.id(f"out-{wire}")  # the port names it
                quiet = (named_by_tail and not renamed) or is_out_port \
                    or self.d.wires[wire].anonymous
                text = "" if quiet else labels.wire_text(self.shapes, wire, axes)
                self.pic.edge(tail, head, self.id(wire), text)

    def _where_of(self, node_id: str) -> Cluster:
        return next(w for w, n, _ in self.pic.nodes if n == node_id)
