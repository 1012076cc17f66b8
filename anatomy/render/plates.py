"""SIMD regions (plates) of a flat diagram, and how they nest when drawn.

The IR has no region boxes: a box lies in the region of axis `a` when it acts
independently for every index of `a`, i.e. `a` is an axis of its output that the box does
not act along (a softmax over `s` is per `t` and `h`, not per `s`; a `linear` making
`h, p` from `d` is per `t` only; a contraction is per axis it keeps, and the axes it sums
leave their region there).

Drawn plates must nest like a tree, but the axis sets of boxes need not form a chain
(`[h]` and `[t]` are both inside `[t, h]`). The rule:

- axes are ordered once per diagram, by how many boxes lie in their region (most first:
  the sequence axis outermost, then heads, ...; ties by first appearance), and a box's
  plates are its SIMD axes in that order, outermost first;
- a plate is a connected region: boxes with the same outer plates and the same next axis
  share a plate when wires connect them inside it; where the data flow leaves the region
  and comes back, that is a second plate of the same axis.
"""

from __future__ import annotations

from collections import Counter

import networkx as nx

from ..ir import Box, Diagram

Plate = tuple[str, int]  # (axis, which region of that axis inside its parent plate)


def acted_axes(box: Box) -> tuple[str, ...]:
    """Output axes the box computes along rather than independently for each index."""
    if box.op in ("rope", "xpos"):      # per position: only the rotated feature pairs mix
        return box.attr("along")[1:]
    if box.op == "linear":              # the axes the projection makes
        return box.attr("out_axes")
    axis = box.attr("axis")
    return tuple(box.attr("along") or ()) + ((axis,) if axis else ())


def simd_axes(diagram: Diagram, box: Box) -> tuple[str, ...]:
    """The axes whose regions contain `box` (none for parameters and composite boxes,
    whose insides are their own diagram)."""
    if box.op in ("param", "call", "slot"):
        return ()
    acted = acted_axes(box)
    others = [set(diagram.wires[w].axes) for w in box.outputs[1:]]
    return tuple(a for a in diagram.wires[box.outputs[0]].axes
                 if a not in acted and all(a in o for o in others))


def vector_axes(diagram: Diagram, sequence_axes: set[str]) -> set[str]:
    """Axes that are the last axis of every (non-parameter) wire carrying them: the
    vectors boxes act on (`n` of `q[t, h, n]`), drawn as wire types rather than plates."""
    last: dict[str, bool] = {}
    for w in diagram.wires.values():
        if w.role != "param":
            for i, a in enumerate(w.axes):
                last[a] = last.get(a, True) and i == len(w.axes) - 1
    return {a for a, only_last in last.items() if only_last and a not in sequence_axes}


def plate_order(diagram: Diagram, boxes: list[Box], skip: set[str]) -> list[str]:
    """The SIMD axes of these boxes, less `skip`, outermost plate first."""
    count = Counter(a for b in boxes for a in simd_axes(diagram, b) if a not in skip)
    first: dict[str, int] = {}
    for w in diagram.wires.values():
        for a in w.axes:
            first.setdefault(a, len(first))
    return sorted(count, key=lambda a: (-count[a], first.get(a, len(first)), a))


def plates(diagram: Diagram, boxes: list[Box], sequence_axes: set[str],
           ) -> dict[str, tuple[Plate, ...]]:
    """For each box id, the plates it is drawn in, outermost first; `sequence_axes` are the
    axes sized like time (always plates, whatever their position in a wire)."""
    order = plate_order(diagram, boxes, vector_axes(diagram, sequence_axes))
    paths = {b.id: tuple(a for a in order if a in simd_axes(diagram, b)) for b in boxes}
    # boxes are linked by a wire between them, or by reading the same wire
    readers: dict[str, list[str]] = {}
    for b in boxes:
        for u in b.inputs:
            readers.setdefault(u.wire, []).append(b.id)
    links = [(r[0], other) for r in readers.values() for other in r[1:]]
    links += [(diagram.producer(w).id, r) for w, rs in readers.items() for r in rs
              if diagram.producer(w) is not None and diagram.producer(w).id in paths]
    out: dict[str, tuple[Plate, ...]] = {b.id: () for b in boxes}
    _split([b.id for b in boxes], 0, paths, links, out)
    return out


def _split(ids: list[str], level: int, paths: dict[str, tuple[str, ...]],
           links: list[tuple[str, str]], out: dict[str, tuple[Plate, ...]]) -> None:
    """Give the boxes `ids` (all in the same plates down to `level`) their plate at `level`
    and below: one plate per axis and connected group."""
    deeper = [i for i in ids if len(paths[i]) > level]
    for axis in dict.fromkeys(paths[i][level] for i in deeper):
        group = [i for i in deeper if paths[i][level] == axis]
        g = nx.Graph()
        g.add_nodes_from(group)
        g.add_edges_from((a, b) for a, b in links if a in g and b in g)
        rank = {i: n for n, i in enumerate(group)}
        regions = sorted(nx.connected_components(g), key=lambda c: min(rank[i] for i in c))
        for n, region in enumerate(regions):
            members = [i for i in group if i in region]
            for i in members:
                out[i] = out[i] + ((axis, n),)
            _split(members, level + 1, paths, links, out)
