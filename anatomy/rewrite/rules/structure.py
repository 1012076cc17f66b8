"""Rules of structure: composite boxes are their bodies, and KV sharing is a broadcast at its
extremes (MQA = GQA with one group, MHA = GQA with as many groups as heads).
"""

from __future__ import annotations

from collections.abc import Iterator

from anatomy.dims import DimExpr
from anatomy.ir import Box, Diagram, Dim, Use, Wire, freeze_attrs
from anatomy.ops import axis_attrs

from ..edit import Edit, rename_use
from ..match import size
from ..site import EXACT, Rule, Site

# attributes whose values are axis names (one, or a tuple)


def rename_attrs(b: Box, rename) -> dict:
    """The box's attributes with axis names mapped by `rename` (a function)."""
    attrs = dict(b.attrs)
    for key in axis_attrs(b.op):
        value = attrs.get(key)
        if isinstance(value, str):
            attrs[key] = rename(value)
        elif isinstance(value, tuple):
            attrs[key] = tuple(rename(a) for a in value)
    init = attrs.get("init")
    if init and init[0] == "fan_in":
        attrs["init"] = (init[0],) + tuple(rename(a) for a in init[1:])
    return attrs


# -- inline: a composite box is its body --------------------------------------------------------
def find_inline(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op == "call":
            yield Site("inline", b.id)


def inline(d: Diagram, site: Site) -> Diagram:
    """Replace a call box by the callee's boxes: ports bound to the call's wires, the
    callee's axes to the caller's (its other axes renamed apart, their sizes kept as dims),
    its wires renamed apart. A share whose groups and heads meet one axis is dropped."""
    e = Edit(d)
    b = d.box(site.box)
    callee = d.program.anatomies[b.attr("anatomy")]
    inner = d.shapes.callees[b.id]
    axis_map: dict[str, str] = {}
    for p, u in zip(callee.inputs, b.inputs):
        axis_map.update(zip(p.axes, u.axes))
    for p, w in zip(callee.outputs, b.outputs):
        axis_map.update(zip(p.axes, d.wires[w].axes))
    bound_classes = {inner.sizes.find(a) for a in axis_map}
    dims = dict(d.dims)
    own = {a for w in callee.wires.values() for a in w.axes} | \
        {a for cb in callee.boxes for u in cb.inputs for a in u.axes}
    for a in sorted(own - set(axis_map)):
        axis_map[a] = a if a not in e.axis_names else e.fresh_axis(a)
        e.axis_names.add(axis_map[a])
        n = inner.size(a)
        if n is not None and inner.sizes.find(a) not in bound_classes:
            dims[axis_map[a]] = Dim(axis_map[a], DimExpr("num", (n,)))

    def axis(a: str) -> str:
        return axis_map.get(a, a)

    ports = {p.name: u for p, u in zip(callee.inputs, b.inputs)}
    outputs = {p.name: w for p, w in zip(callee.outputs, b.outputs)}
    wire_map: dict[str, str] = {}
    body: list[Box] = []

    def use(u: Use) -> Use:
        source = ports[u.wire].wire if u.wire in ports else wire_map[u.wire]
        return Use(source, tuple(axis(a) for a in u.axes))

    for cb in callee.boxes:
        if cb.op == "share" and len({axis(a) for a in cb.attr("along")}) == 1:
            wire_map[cb.outputs[0]] = use(cb.inputs[0]).wire
            continue
        names = []
        for w in cb.outputs:
            name = outputs.get(w) or e.fresh_wire(w)
            if w not in outputs:
                wire = callee.wires[w]
                role = "param" if wire.role == "param" else "internal"
                e.wires[name] = Wire(name, tuple(axis(a) for a in wire.axes), role)
            wire_map[w] = name
            names.append(name)
        body.append(Box(cb.op, tuple(use(u) for u in cb.inputs), tuple(names),
                        freeze_attrs(rename_attrs(cb, axis)), b.loc))
    for p, w in outputs.items():
        if wire_map.get(p) != w:  # the callee passes an input (or an alias) straight out
            port = next(q for q in callee.outputs if q.name == p)
            body.append(Box("contract", (use(Use(p, port.axes)),), (w,)))
    at = e.index(b.id)
    e.boxes[at:at + 1] = body
    e.dims = dims
    return e.done()


# -- KV sharing at its extremes -----------------------------------------------------------------
def find_share_identity(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op == "share":
            g, h = b.attr("along")
            if g == h or size(d, g) is not None and size(d, g) == size(d, h):
                yield Site("share_identity", b.id)


def share_identity(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    g, h = b.attr("along")
    e.redirect(b.id, rename_use(b.inputs[0], {g: h}))
    return e.done()


def find_unit_axis(d: Diagram) -> Iterator[Site]:
    if d.shapes is None:
        return
    ports = {d.shapes.sizes.find(a) for p in d.inputs + d.outputs for a in p.axes}
    classes: dict[str, set[str]] = {}
    for w in d.wires.values():
        for a in w.axes:
            classes.setdefault(d.shapes.sizes.find(a), set()).add(a)
    for b in d.boxes:
        for u in b.inputs:
            for a in u.axes:
                classes.setdefault(d.shapes.sizes.find(a), set()).add(a)
    for root, names in sorted(classes.items()):
        if root in ports or d.shapes.size(root) != 1:
            continue
        if any(_needs_axis(b, names) for b in d.boxes):
            continue
        first = next(b.id for b in d.boxes if set(d.wires[b.outputs[0]].axes) & names)
        yield Site("unit_axis", first, tuple(sorted(names)))


def _needs_axis(b: Box, names: set[str]) -> bool:
    """Boxes whose meaning needs the axis itself (not just a broadcast along it)."""
    if b.op == "share":
        return b.attr("along")[1] in names
    if b.op == "linear":
        return set(b.attr("in_axes")) <= names or set(b.attr("out_axes")) <= names
    return any(set((v,) if isinstance(v, str) else v) & names
               for k, v in b.attrs if k in axis_attrs(b.op))


def unit_axis(d: Diagram, site: Site) -> Diagram:
    """Drop an axis of size 1 (every name of its class) from every wire: tensors are
    constant along it and sums over it are identities; `share` over one group becomes a
    broadcast. Parameters lose the axis too (a reshape: the same numbers)."""
    names = set(site.params)
    e = Edit(d)

    def strip(u: Use) -> Use:
        keep = [i for i, a in enumerate(d.wires[u.wire].axes) if a not in names]
        return Use(u.wire, tuple(u.axes[i] for i in keep))

    e.wires = {n: Wire(w.name, tuple(a for a in w.axes if a not in names), w.role, w.loc)
               for n, w in d.wires.items()}
    shares = []
    for i, b in enumerate(e.boxes):
        attrs = rename_attrs(b, lambda a: a)
        for key in ("in_axes", "out_axes"):
            if key in attrs:
                attrs[key] = tuple(a for a in attrs[key] if a not in names)
        if "init" in attrs and attrs["init"][0] == "fan_in":
            attrs["init"] = tuple(a for a in attrs["init"] if a not in names)
        e.boxes[i] = Box(b.op, tuple(strip(u) for u in b.inputs), b.outputs, freeze_attrs(attrs),
                         b.loc)
        if b.op == "share" and b.attr("along")[0] in names:
            shares.append(e.boxes[i])
    for b in shares:
        e.redirect(b.id, b.inputs[0])
    return e.done()


_GROUPS = """
anatomy w(x[t, d]) -> y[t, h, n]
  dims d = 3, h = 2, g = {g}, n = 2
  q[t, h, n] = linear(x)
  k[t, g, n] = linear(x)
  v[t, g, n] = linear(x)
  kh[t, h, n] = share(k, g, h)
  vh[t, h, n] = share(v, g, h)
  y[t, h, n] = causal(t, s) * q * kh[s, h, n] * vh[s, h, n]
"""

_CALL = """
anatomy mix(q[t, h, n], k[t, h, n], v[t, h, p]) -> o[t, h, p]
  o[t, h, p] = causal(t, s) * q * k[s, h, n] * v[s, h, p]

anatomy w(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
  y[t, h, p] = mix(q, k, v) + v
"""

RULES = [
    Rule("inline", EXACT, "a composite box equals its body, wired to the box's wires",
         find_inline, inline, normalising=True, witnesses=(_CALL,)),
    Rule("share_identity", EXACT,
         "share(x, g, h) = x when G = H (or g is h): with as many groups as heads, GQA is "
         "MHA",
         find_share_identity, share_identity, normalising=True,
         witnesses=(_GROUPS.format(g=2),)),
    Rule("unit_axis", EXACT,
         "an axis of size 1 can be dropped, and share over one group is a broadcast: GQA "
         "with G = 1 is MQA (parameters reshaped)",
         find_unit_axis, unit_axis, normalising=True, witnesses=(_GROUPS.format(g=1),)),
]
