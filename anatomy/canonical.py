"""Structural identity of diagrams: one hash for diagrams that are equal up to the names of
their wires and axes and the order of their statements. (The canonical form up to the
normalising rewrite rules, `anatomy.canonical(d)`, lives with the rewrite engine:
`anatomy.rewrite.canonical`; this module is the core it builds on.)

The diagram is encoded as a labelled graph in which names do not appear: a node per box
(labelled by its op and its name-free attributes), a node per axis *of each box* (labelled
by its size and its role there: kept, summed, or named by an attribute such as `along`),
and edges for the data flow between boxes and for the flow of each axis from a producer's
output position to the consumer's local axis. Signature ports keep their positions. The
hash (`structure_hash`) is a one-pass Merkle hash over the DAG that follows the same
encoding; `same_structure` decides equality exactly (graph isomorphism on the encoding).
"""

from __future__ import annotations

import hashlib
from typing import Any

import networkx as nx

from .ir import Box, Diagram
from .ops import OPS

# Boxes whose tensor inputs may be reordered without changing the value.
COMMUTATIVE = frozenset({"contract", "add"})
# Attributes that name wires or carry no meaning for the value.
_IGNORED_ATTRS = frozenset({"name", "implicit", "tensor_options"})


def structure_graph(d: Diagram) -> nx.DiGraph:
    """The name-free graph encoding of a diagram (see the module docstring)."""
    g = nx.DiGraph()
    size = d.shapes.size if d.shapes is not None else (lambda a: None)

    def axis_node(owner: str, axis: str) -> str:
        node = f"{owner}#{axis}"
        if node not in g:
            n = size(axis)
            g.add_node(node, label=f"axis:{n if n is not None else 'free'}")
            g.add_edge(owner, node, label="axis")
        return node

    # signature: ports by position; axes shared between ports by name
    signature_axes: dict[str, str] = {}
    for kind, ports in (("in", d.inputs), ("out", d.outputs)):
        for i, p in enumerate(ports):
            node = f"{kind}:{p.name}"
            g.add_node(node, label=f"{kind}{i}")
            for j, a in enumerate(p.axes):
                an = axis_node(node, a)
                g.add_edge(node, an, label=f"pos{j}")
                if a in signature_axes:
                    g.add_edge(signature_axes[a], an, label="same")
                else:
                    signature_axes[a] = an
    source: dict[str, tuple[str, tuple[str, ...]]] = {
        p.name: (f"in:{p.name}", p.axes) for p in d.inputs}
    for b in d.boxes:
        for k, w in enumerate(b.outputs):
            source[w] = (b.id, d.wires[w].axes) if len(b.outputs) == 1 else \
                (f"{b.id}@{k}", d.wires[w].axes)
    for b in d.boxes:
        g.add_node(b.id, label=_box_label(b))
        out_axes = d.wires[b.outputs[0]].axes
        for k, w in enumerate(b.outputs):
            if len(b.outputs) > 1:
                node = f"{b.id}@{k}"
                g.add_node(node, label=f"output{k}")
                g.add_edge(b.id, node, label="result")
                for j, a in enumerate(d.wires[w].axes):
                    g.add_edge(node, axis_node(b.id, a), label=f"pos{j}")
        for a in out_axes:
            g.add_edge(b.id, axis_node(b.id, a), label="kept")
        for key, value in b.attrs:
            names = (value,) if isinstance(value, str) else value
            if isinstance(names, tuple) and names and all(isinstance(x, str) for x in names):
                for j, a in enumerate(names):
                    if _is_local_axis(d, b, a):
                        g.add_edge(b.id, axis_node(b.id, a), label=f"{key}{j}")
        for i, u in enumerate(b.inputs):
            src, src_axes = source[u.wire]
            port = f"{b.id}<{i}"
            g.add_node(port, label="arg" if b.op in COMMUTATIVE else f"arg{i}")
            g.add_edge(src, port, label="flow")
            g.add_edge(port, b.id, label="into")
            for wa, ua in zip(src_axes, u.axes):
                g.add_edge(axis_node(src, wa), axis_node(b.id, ua), label="axis-flow")
    for p in d.outputs:
        src, src_axes = source[p.name]
        g.add_edge(src, f"out:{p.name}", label="flow")
        for wa, pa in zip(src_axes, p.axes):
            g.add_edge(axis_node(src, wa), axis_node(f"out:{p.name}", pa), label="axis-flow")
    return g


def _is_local_axis(d: Diagram, b: Box, name: str) -> bool:
    return name in d.wires[b.outputs[0]].axes or any(name in u.axes for u in b.inputs) \
        or b.op in ("causal", "window", "full", "decay", "index", "size", "linear")


def _box_label(b: Box) -> str:
    parts = [b.op]
    defaults = OPS[b.op].options if b.op in OPS else {}
    for key, value in b.attrs:
        if key in _IGNORED_ATTRS or (key in defaults and defaults[key] == value):
            continue
        if isinstance(value, str) or (isinstance(value, tuple) and value
                                      and all(isinstance(x, str) for x in value)):
            if key in ("anatomy", "slot"):
                parts.append(f"{key}={value}")
            elif key == "init":  # (name, fan_in axes...): the axes become edges
                parts.append(f"init={value[0]}")
            continue  # axis names: encoded as edges
        parts.append(f"{key}={_plain(value)}")
    return " ".join(parts)


def _plain(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return "(" + ",".join(_plain(v) for v in value) + ")"
    return str(value)


def _h(*parts) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


def structure_hash(d: Diagram) -> str:
    """The hash of a diagram as written: invariant to wire and axis names and statement
    order, not to rewriting. A Merkle hash over the DAG in one pass: each box's hash
    covers its op, its attributes and its inputs' hashes; each axis of each box is
    identified by where it flows from (the producers' axes), its role there (kept, summed,
    named by an attribute such as `along`) and its size, never by its name.

    Parameters are variables, not values: two parameter boxes of one shape are different
    weights. A Merkle hash alone would give them one hash (and MHA the hash of attention
    with tied keys and values), so each parameter is also identified by where its value
    goes (`_uses`), and the multiset of parameters is part of the hash."""
    sizes: dict[str, int | None] = {}

    def size(a: str) -> int | None:
        if a not in sizes:
            sizes[a] = d.shapes.size(a) if d.shapes is not None else None
        return sizes[a]
    sig_order: dict[str, int] = {}
    for p in d.inputs + d.outputs:
        for a in p.axes:
            sig_order.setdefault(a, len(sig_order))
    labels = {b.id: _box_label(b) for b in d.boxes}
    uses = _uses(d, labels)
    params: list[str] = []
    wire_hash: dict[str, str] = {}
    axis_hash: dict[tuple[str, str], str] = {}
    for i, p in enumerate(d.inputs):
        wire_hash[p.name] = _h("in", i)
        for a in p.axes:
            axis_hash[p.name, a] = _h("sig", sig_order[a], size(a))
    for b in d.boxes:
        out = d.wires[b.outputs[0]].axes
        flows: dict[str, list] = {}
        for i, u in enumerate(b.inputs):
            slot = "arg" if b.op in COMMUTATIVE else f"arg{i}"
            for wa, ua in zip(d.wires[u.wire].axes, u.axes):
                flows.setdefault(ua, []).append((slot, axis_hash[u.wire, wa]))
        roles: dict[str, list] = {}
        for key, value in b.attrs:
            names = (value,) if isinstance(value, str) else value
            if isinstance(names, tuple) and all(isinstance(x, str) for x in names):
                for j, a in enumerate(names):
                    roles.setdefault(a, []).append(f"{key}{j}")
        local = {}
        for a in set(flows) | set(out) | set(roles):
            local[a] = _h(sorted(flows.get(a, ())), sorted(roles.get(a, ())),
                          "kept" if a in out else "summed", size(a))
        args = []
        for i, u in enumerate(b.inputs):
            pairs = sorted((axis_hash[u.wire, wa], local[ua])
                           for wa, ua in zip(d.wires[u.wire].axes, u.axes))
            args.append((wire_hash[u.wire], pairs))
        if b.op in COMMUTATIVE:
            args.sort()
        box = _h(labels[b.id], args, sorted(local[a] for a in local if a not in out))
        if b.op == "param":
            box = _h(box, uses[b.id])
            params.append(box)
        for k, w in enumerate(b.outputs):
            wire_hash[w] = _h(box, k)
            for a in d.wires[w].axes:
                axis_hash[w, a] = _h(wire_hash[w], local.get(a))
    ports = []
    for p in d.outputs:
        axes = tuple((axis_hash[p.name, a], sig_order[a]) for a in d.wires[p.name].axes)
        ports.append((wire_hash[p.name], tuple(sorted(axes))))
    return _h("diagram", ports, sorted(params))


def _uses(d: Diagram, labels: dict[str, str]) -> dict[str, str]:
    """For each box, a name-free hash of where its outputs go: the boxes that read them
    (their labels, the argument they are, and where those boxes' outputs go in turn) and
    the output ports they are. Boxes are in a topological order, so one backward pass."""
    port_index: dict[str, list[int]] = {}
    for j, p in enumerate(d.outputs):
        port_index.setdefault(p.name, []).append(j)
    producer = {w: (b.id, k) for b in d.boxes for k, w in enumerate(b.outputs)}
    reads: dict[str, list[tuple[str, ...]]] = {}
    out: dict[str, str] = {}
    for b in reversed(d.boxes):
        ports = [("port", str(j), str(k)) for k, w in enumerate(b.outputs)
                 for j in port_index.get(w, ())]
        out[b.id] = _h(sorted(reads.get(b.id, []) + ports))
        for i, u in enumerate(b.inputs):
            if u.wire in producer:
                src, k = producer[u.wire]
                arg = "arg" if b.op in COMMUTATIVE else f"arg{i}"
                reads.setdefault(src, []).append((out[b.id], labels[b.id], arg, str(k)))
    return out


def same_structure(a: Diagram, b: Diagram) -> bool:
    """Whether two diagrams are the same up to wire names, axis names and statement order
    (exact: a graph isomorphism test on the name-free encoding)."""
    if structure_hash(a) != structure_hash(b):
        return False
    ga, gb = structure_graph(a), structure_graph(b)
    same = nx.algorithms.isomorphism.categorical_node_match("label", None)
    same_edge = nx.algorithms.isomorphism.categorical_edge_match("label", None)
    return nx.is_isomorphic(ga, gb, node_match=same, edge_match=same_edge)
