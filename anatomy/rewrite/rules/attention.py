"""Fused softmax attention (docs/background.md, biased softmax): the lowering rule that turns
softmax(expr(q . k) + mask) * v into one `attention` box, and the rule that undoes it.

The score a softmax row sees is read off the diagram as one small expression (plain tuples,
lowering/softmax_bias.py runs it): the one q.k contraction becomes ("score",);
index(t) and index(s) become positions ("t",) / ("s",); log(decay(log_a, t, s)) becomes a
segment sum of per-token log-decays ("segsum", i) or, for a log-decay without the query
axis, a ramp (t - s) log_gamma ("ramp", e); numbers and values read by head, query and key
(constants, per-head parameters, a document id) become leaves ("leaf", i); arithmetic and
the pointwise activations stay operations. Anything else (a decay along other axes, a sum
inside the score, masks other than causal and window) keeps the explicit boxes.

The `attention` box reads q, k and v, then the score contraction's numbers (their product
is the scale: `scales` of them), then the leaves; its attributes are the expression, the
kind of each leaf ("val" or "segsum"), causal and window.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from anatomy.ir import Box, Diagram, Use
from anatomy.ops import OPS, attention_roles

from ..edit import Edit, rename_use
from ..match import out_axes, producer
from ..site import EXACT, Rule, Site

# the score expression's operations that are boxes of the language
_ARITHMETIC = ("add", "sub", "div", "pow", "neg")
_POINTWISE = tuple(op for op, spec in OPS.items() if spec.kind in ("activation", "gate")
                   and spec.tensors == 1 and not spec.axes)


@dataclass(frozen=True)
class SoftmaxAttention:
    """What `fuse_attention` replaces: the mixing contraction softmax(...) * v (`weights`,
    `value`: the indices of its inputs), with q, k, v, the scale's numbers and the leaves as
    uses in the contraction's axis names."""

    weights: int
    value: int
    t: str
    s: str
    q: Use
    k: Use
    scales: tuple[Use, ...]
    expr: tuple
    leaves: tuple[tuple[str, Use], ...]  # ("val" | "segsum", use)
    causal: bool
    window: int | None


class _ScoreExpr:
    """Reads the softmax's input as a score expression (see the module docstring); None for
    anything else."""

    def __init__(self, d: Diagram, s: str):
        self.d, self.s = d, s
        self.score: tuple[Box, dict] | None = None  # the q.k contraction, its names -> ours
        self.leaves: list[tuple[str, Use]] = []
        self.pairs: list[tuple[str, str]] = []  # (query, key) axes of every decay
        self.causal = False                     # a decay's log is -inf above the diagonal
        self.positions: set[str] = set()        # the axes of index(...) boxes

    def leaf(self, kind: str, use: Use) -> tuple:
        self.leaves.append((kind, use))
        return ("segsum" if kind == "segsum" else "leaf", len(self.leaves) - 1)

    def compile(self, use: Use, rename: dict):
        d = self.d
        own = d.wires[use.wire].axes
        if not use.axes:  # a number (a constant, a size, a learned scalar)
            return self.leaf("val", Use(use.wire, ()))
        wmap = {a: rename.get(ua, ua) for a, ua in zip(own, use.axes)}
        box = d.producer(use.wire)
        if box is None:  # an input port: a per-token value (a document id, a position)
            return self.value(use, wmap)
        tensors = [u for u in box.inputs if u.axes]
        if box.op == "contract" and len(tensors) == 2 and self.score is None and \
                {a for u in tensors for a in u.axes} - set(own):
            self.score = (box, wmap)  # sums its feature axes: the q.k score
            return ("score",)
        if box.op == "index":
            axis = wmap[box.attr("axis")]
            if d.shapes.sizes.find(axis) == d.shapes.sizes.find(self.s):
                self.positions.add(axis)
                return ("s",) if axis == self.s else ("t",)
            return self.value(use, wmap)
        inner = d.producer(box.inputs[0].wire) if box.inputs else None
        if box.op == "log" and inner is not None and inner.op == "decay":
            names = {a: wmap.get(ua, ua) for a, ua in
                     zip(d.wires[box.inputs[0].wire].axes, box.inputs[0].axes)}
            return self.log_decay(inner, names)
        if box.op == "decay":
            log = self.log_decay(box, wmap)
            return None if log is None else ("exp", log)
        out = set(own)
        if box.op == "contract" or box.op in _ARITHMETIC or box.op in _POINTWISE:
            if any(not set(u.axes) <= out for u in box.inputs):
                return None  # a sum
            parts = [self.compile(u, wmap) for u in box.inputs]
            if any(p is None for p in parts):
                return None
            if box.op == "contract":
                expr = parts[0]
                for p in parts[1:]:
                    expr = ("mul", expr, p)
                return expr
            return (box.op, *parts)
        return self.value(use, wmap)

    def value(self, use: Use, wmap: dict):
        """A wire read as it is: a leaf, in our names."""
        return self.leaf("val", Use(use.wire, tuple(wmap[a] for a in self.d.wires[use.wire].axes)))

    def log_decay(self, box: Box, wmap: dict):
        """log decay(log_a, t, s): c[t] - c[s] (per-token log_a) or (t - s) log_gamma."""
        q, k = box.attr("along")
        self.pairs.append((wmap[q], wmap[k]))
        self.causal = True
        la = box.inputs[0]
        if q not in la.axes:
            slope = self.compile(la, wmap)
            return None if slope is None else ("ramp", slope)
        return self.leaf("segsum", Use(la.wire, tuple(wmap.get(a, a) for a in la.axes)))


def match_softmax_attention(d: Diagram, box: Box) -> SoftmaxAttention | None:
    """Recognise softmax attention ending in this contraction (or None)."""
    if box.op != "contract" or len(box.inputs) != 2:
        return None
    out = out_axes(d, box)
    for iw, iv in ((0, 1), (1, 0)):
        sm = producer(d, box.inputs[iw])
        if sm is None or sm.op != "softmax":
            continue
        to_c = dict(zip(d.wires[sm.outputs[0]].axes, box.inputs[iw].axes))
        s = to_c[sm.attr("along")[0]]
        if s in out:
            return None
        score_expr = _ScoreExpr(d, s)
        expr = score_expr.compile(sm.inputs[0], to_c)
        if expr is None or score_expr.score is None:
            return None
        return _checked(d, box, sm, iw, iv, s, expr, score_expr)
    return None


def _checked(d: Diagram, box: Box, sm: Box, iw: int, iv: int, s: str, expr: tuple,
             found: _ScoreExpr) -> SoftmaxAttention | None:
    """The match, when q, k, v, the leaves and the mask have the axes fused attention takes."""
    out = out_axes(d, box)
    score, names = found.score
    t = next((a for a in out if a in names.values() and a != s), None)
    summed = {a for u in score.inputs for a in u.axes} - set(d.wires[score.outputs[0]].axes)
    if summed & ({a for a in out if a in names.values()} | {s}):
        return None  # a feature axis named like a head or time axis: keep it explicit
    # a feature axis named like one of the values: renamed apart
    names = {**names, **{a: _fresh_axis(d, a) for a in summed & set(out)}}
    tensors = [rename_use(u, names) for u in score.inputs if u.axes]
    if t is None or len(tensors) != 2:
        return None
    if t in tensors[1].axes:
        tensors.reverse()
    q, k = tensors
    if not (t in q.axes and s not in q.axes and s in k.axes and t not in k.axes):
        return None
    v = box.inputs[iv]
    heads, state, values = attention_roles((q.axes, k.axes, v.axes), (t, s), out)
    if any(a not in heads + state + (t,) for a in q.axes) or \
            any(a not in heads + state + (s,) for a in k.axes) or \
            any(a not in heads + values + (s,) for a in v.axes) or s not in v.axes:
        return None
    if any(pair != (t, s) for pair in found.pairs) or not found.positions <= {t, s}:
        return None  # a decay or index along other axes
    if any(not set(u.axes) <= set(heads) | {t, s} for _, u in found.leaves):
        return None
    causal, window = found.causal, None
    if len(sm.inputs) > 1:
        mask = producer(d, sm.inputs[1])
        if mask is None or mask.op not in ("causal", "window"):
            return None  # other masks: the explicit graph
        to_c = dict(zip(d.wires[sm.outputs[0]].axes, box.inputs[iw].axes))
        m_axes = dict(zip(d.wires[sm.inputs[1].wire].axes, sm.inputs[1].axes))
        if tuple(to_c.get(m_axes[a], m_axes[a]) for a in mask.attr("along")) != (t, s):
            return None
        causal = True
        window = mask.attr("size") if mask.op == "window" else None
    scales = tuple(rename_use(u, names) for u in score.inputs if not u.axes)
    return SoftmaxAttention(iw, iv, t, s, q, k, scales, expr, tuple(found.leaves), causal,
                            window)


def _fresh_axis(d: Diagram, stem: str) -> str:
    """An axis name the diagram does not use."""
    taken = {a for w in d.wires.values() for a in w.axes} | set(d.dims) | \
        {a for b in d.boxes for u in b.inputs for a in u.axes}
    return next(f"{stem}{i}" for i in range(2, 10**6) if f"{stem}{i}" not in taken)


def find_fuse_attention(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if match_softmax_attention(d, b) is not None:
            yield Site("fuse_attention", b.id)


def fuse_attention(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    m = match_softmax_attention(d, b)
    inputs = [m.q, m.k, b.inputs[m.value], *m.scales, *(u for _, u in m.leaves)]
    e.replace(b.id, "attention", inputs, along=(m.t, m.s), expr=m.expr,
              leaves=tuple(kind for kind, _ in m.leaves), scales=len(m.scales),
              causal=m.causal, window=m.window or 0)
    return e.done()


# -- the explicit boxes again ------------------------------------------------------------------
def find_unfuse_attention(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op == "attention":
            yield Site("unfuse_attention", b.id)


def unfuse_attention(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    t, s = b.attr("along")
    q, k, v = b.inputs[:3]
    n_scales = b.attr("scales", 0)
    scales = list(b.inputs[3:3 + n_scales])
    if b.attr("scale", 1.0) != 1.0:
        scales.append(e.const(b.attr("scale"), before=b.id))
    leaves = b.inputs[3 + n_scales:]
    state = attention_roles(tuple(u.axes for u in b.inputs), (t, s), out_axes(d, b))[1]
    score_axes = tuple(dict.fromkeys(a for a in q.axes + k.axes if a not in state))
    score = e.add("contract", [q, k, *scales], score_axes, "_", before=b.id)
    expr = b.attr("expr", ("score",))
    x = _boxes(e, b.id, expr, score, leaves, t, s)
    window = b.attr("window", 0)
    mask = []
    if window:
        mask = [e.add("window", [], (t, s), "_", before=b.id, along=(t, s), size=window)]
    elif b.attr("causal") and not _uses_decay(expr):
        mask = [e.add("causal", [], (t, s), "_", before=b.id, along=(t, s))]
    opts = {"tensor_options": ("mask",)} if mask else {}
    w = e.add("softmax", [x, *mask], x.axes, "_", before=b.id, along=(s,), **opts)
    e.replace(b.id, "contract", [w, v])
    return e.done()


def _uses_decay(expr: tuple) -> bool:
    if expr[0] in ("segsum", "ramp"):
        return True
    return expr[0] not in ("const", "leaf") and \
        any(isinstance(x, tuple) and _uses_decay(x) for x in expr[1:])


def _boxes(e: Edit, before: str, expr: tuple, score: Use, leaves, t: str, s: str) -> Use:
    """The boxes of a score expression (the inverse of `_ScoreExpr.compile`)."""
    head = expr[0]
    if head == "score":
        return score
    if head in ("t", "s"):
        axis = t if head == "t" else s
        return e.add("index", [], (axis,), "_", before=before, axis=axis)
    if head == "const":
        return e.const(expr[1], before=before)
    if head == "leaf":
        return leaves[expr[1]]
    if head in ("segsum", "ramp"):
        la = leaves[expr[1]] if head == "segsum" else \
            _boxes(e, before, expr[1], score, leaves, t, s)
        axes = OPS["decay"].out_axes((la.axes,), (t, s))
        dec = e.add("decay", [la], axes, "_", before=before, along=(t, s))
        return e.add("log", [dec], axes, "_", before=before)
    parts = [_boxes(e, before, x, score, leaves, t, s) for x in expr[1:]]
    axes = tuple(dict.fromkeys(a for p in parts for a in p.axes))
    op = "contract" if head == "mul" else head
    return e.add(op, parts, axes, "_", before=before)


_CORE = """
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h], doc[t]) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
"""
_MIX = "  y[t, h, p] = w * v[s, h, p]\n"

WITNESSES = (
    # plain (bidirectional), scaled by a function of a size
    _CORE + "  qk[h, t, s] = q * k[s, h, n] * size(n) ** -0.5\n"
            "  w[h, t, s] = softmax(qk, s)\n" + _MIX,
    # causal
    _CORE + "  qk[h, t, s] = q * k[s, h, n] / 2\n"
            "  w[h, t, s] = softmax(qk, s, mask=causal(t, s))\n" + _MIX,
    # a sliding window
    _CORE + "  qk[h, t, s] = q * k[s, h, n]\n"
            "  w[h, t, s] = softmax(qk, s, mask=window(t, s, size=2))\n" + _MIX,
    # an ALiBi-like bias: a learned slope per head times the distance
    _CORE + "  param m[h] ~ uniform(0.1, 1)\n  qk[h, t, s] = q * k[s, h, n]\n"
            "  w[h, t, s] = softmax(qk - m * (index(t) - index(s)), s, mask=causal(t, s))\n"
    + _MIX,
    # FoX-like: the log of a decay with per-token log-decays
    _CORE + "  qk[h, t, s] = q * k[s, h, n]\n"
            "  w[h, t, s] = softmax(qk + log(decay(log_a, t, s)), s)\n" + _MIX,
    # a per-token value leaf (a document id, read by query and key) and soft-capping
    _CORE + "  qk[h, t, s] = q * k[s, h, n]\n"
            "  w[h, t, s] = softmax(2 * tanh(qk / 2) - (doc - doc[s]) ** 2, s, "
            "mask=causal(t, s))\n" + _MIX,
)

RULES = [
    Rule("fuse_attention", EXACT,
         "Σ_s softmax_s(expr(scale Σ_n q[t, n] k[s, n]) + mask) v[s, p] = attention(q, k, v, "
         "t, s): softmax attention whose score is the q.k score modified by positions, "
         "per-token log-decays and per-head values, masked causally or by a window, is one "
         "fused call (SDPA / FlexAttention)",
         find_fuse_attention, fuse_attention, witnesses=WITNESSES),
    Rule("unfuse_attention", EXACT,
         "attention(q, k, v, t, s) = Σ_s softmax_s(expr(scale Σ_n q[t, n] k[s, n]) + mask) "
         "v[s, p]: the fused call as its explicit boxes",
         find_unfuse_attention, unfuse_attention, normalising=True, witnesses=WITNESSES,
         witnesses_through="fuse_attention"),
]
