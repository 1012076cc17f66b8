"""Execution forms: how structured boxes run, and which boxes get a fused lowering.

- parallel: every box lowered as written (the quadratic, masked form).
- chunked: the diagram is first rewritten by the rewrite engine's proven lowering rules
  (`anatomy.rewrite.lower`): masked linear attention becomes an `ssd` box, which runs
  through `anatomy.kernels.ssd` (linear in T), or `anatomy.kernels.gla` for a decay per key
  channel (with RWKV-6's bonus when the read-out is the state before the step plus the
  current token's term). Nothing here matches zoo names.
- auto: chunked, plus softmax attention through scaled_dot_product_attention (no mask or
  causal), or FlexAttention (sliding windows; pointwise score modifications with constants).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from anatomy.errors import AnatError
from anatomy.ir import Box, Use
from anatomy.ops import ssd_state

from . import torch_ops as ops
from .graph import BATCH, GraphBuilder, Val


@dataclass(frozen=True)
class SsdRoles:
    """The axes of an `ssd` box by role: y[t, H, P] = sum_{s, N} L[t, s, H] q k v."""

    t: str
    heads: tuple[str, ...]
    state: tuple[str, ...]   # N: summed feature axes
    values: tuple[str, ...]  # P: value feature axes


def ssd_roles(d, box: Box) -> SsdRoles:
    q, k, _, log_a = (u.axes for u in box.inputs)
    (t,) = box.attr("along")
    out = d.wires[box.outputs[0]].axes
    state = ssd_state(q, k, out)
    heads = tuple(a for a in out if a != t and (a in q or a in k or a in log_a))
    values = tuple(a for a in out if a != t and a not in heads)
    if len(heads) > 1:
        raise AnatError(f"ssd runs one heads axis, but {box.outputs[0]} has heads "
                        f"{', '.join(heads)}", box.loc,
                        hint="merge the head axes into one, or write the masked product")
    return SsdRoles(t, heads, state, values)


def lower_ssd(b: GraphBuilder, box: Box, initial_state=None):
    """Emit one call of the chunked SSD kernel for an `ssd` box (the gated linear attention
    kernel when its log-decay has state axes: a decay per key channel). With an
    `initial_state` node (the step form), return the node of the final state."""
    from anatomy.kernels import gla, ssd
    r = ssd_roles(b.d, box)
    heads, state, values = r.heads, r.state, r.values
    q = b.use(box.inputs[0], current=True)
    k = b.use(box.inputs[1], current=True)
    # q, k: [B, T, G, N] with G = 1 (shared by all heads) or the heads axis
    on_q = all(h in q.layout for h in heads)
    on_k = all(h in k.layout for h in heads)
    g = heads if on_q or on_k else ()
    q_t = _as_kernel_input(b, q, r.t, g, state, expand_heads=bool(g) and not on_q)
    k_t = _as_kernel_input(b, k, r.t, g, state, expand_heads=bool(g) and not on_k)
    v = b.use(box.inputs[2], current=True)
    if v.layout is None:  # a number: sum_s L q.k times it (a linear-attention normaliser)
        v_t = b.call(ops.ones_values, k_t, b.size(heads[0]) if heads else 1, v.value)
    else:
        v_t = _as_kernel_input(b, v, r.t, heads, values, expand_heads=True)
    la = b.use(box.inputs[3], current=True)
    per_channel = la.layout is not None and any(a in la.layout for a in state)
    kernel = gla if per_channel else ssd  # a decay per key channel: the gated kernel
    log_a = _kernel_log_decay(b, la, r, v_t)
    if box.outputs[0] in b.float32_wires:  # a side of a normaliser: y in float32
        q_t, k_t, v_t = (b.call(ops.upcast, x) for x in (q_t, k_t, v_t))
    return _call_kernel(b, box, r, kernel, (q_t, k_t, v_t, log_a),
                        {"chunk_size": box.attr("chunk", 64)}, initial_state)


def _kernel_log_decay(b: GraphBuilder, la: Val, r: SsdRoles, v_t):
    """A log-decay laid out for a kernel: [B, T, H], or [B, T, H, N] when it carries state
    axes (a decay per key channel; state axes it lacks are broadcast). A number, or a wire
    without batch, time or heads, is broadcast to them."""
    if la.layout is None:
        return b.call(ops.constant_log_decay, v_t, la.value)
    state = r.state if any(a in la.layout for a in r.state) else ()
    sizes = tuple(b.size(a) for a in state)
    return b.call(ops.as_kernel_gate, b.align(la, (BATCH, r.t) + r.heads + state), v_t,
                  bool(r.heads), sizes)


def _call_kernel(b: GraphBuilder, box: Box, r: SsdRoles, kernel, args: tuple, kwargs: dict,
                 initial_state=None):
    """Call a chunked kernel (y [B, T, H, P_flat]) and store y in the box's natural layout
    (B, t, heads..., values...). With an `initial_state` node (the step form), return the
    node of the final state."""
    final = None
    # the scale written into the graph: left to the kernel's float default, torch.compile
    # would trace it as a symbolic float and restart its analysis (ops.contract)
    kwargs = {"scale": 1.0, **kwargs}
    if initial_state is None:
        y = b.call(kernel, *args, **kwargs, name=box.outputs[0])
    else:
        both = b.call(kernel, *args, **kwargs, initial_state=initial_state,
                      output_final_state=True)
        y = b.call(operator.getitem, both, 0, name=box.outputs[0])
        final = b.call(operator.getitem, both, 1)
    sizes = tuple(b.size(a) for a in r.values)
    y = b.call(ops.unflatten_values, y, bool(r.heads), sizes)
    b.store(box, y, (BATCH, r.t) + r.heads + r.values)
    return final

@dataclass(frozen=True)
class BonusMatch:
    """RWKV-6's read-out, y = past + (q * u * k) v with past = Σ_{s,n} L(shift(log_a))[t, s, n]
    q[t] shift(k)[s] shift(v)[s] (an `ssd` box over keys, values and log-decays shifted one
    step later): `gla(q, k, v, log_a, bonus=u)`. Uses of the wires involved (no renames)."""

    ssd: Box
    q: Use
    k: Use
    v: Use
    log_a: Use
    bonus: Use


def _shifted(d, u: Use, t: str) -> Use | None:
    """The input of `shift(x, t)` (one step later) that `u` reads, or None."""
    p = d.producer(u.wire)
    if p is None or p.op != "shift" or p.attr("along") != (t,) or p.attr("by", 1) != 1:
        return None
    return p.inputs[0]


def match_bonus(d, box: Box) -> BonusMatch | None:
    """Recognise RWKV-6's state before the step plus the bonus in an `add` box (or None).
    Every use must read its wire under the wire's own axis names."""
    plain = lambda u: u.axes == d.wires[u.wire].axes
    if box.op != "add" or len(box.inputs) != 2 or not all(plain(u) for u in box.inputs):
        return None
    for i in (0, 1):
        past, cur = (d.producer(u.wire) for u in (box.inputs[i], box.inputs[1 - i]))
        if past is None or past.op != "ssd" or cur is None or cur.op != "contract":
            continue
        (t,) = past.attr("along")
        q, ks, vs, ls = past.inputs
        k, v, log_a = (_shifted(d, u, t) for u in (ks, vs, ls))
        if k is None or v is None or log_a is None or \
                not all(plain(u) for u in (q, ks, vs, ls, k, v, log_a)) or \
                len(cur.inputs) != 2:
            continue
        now = next((u for u in cur.inputs if u.wire != v.wire), None)
        if now is None or [u.wire for u in cur.inputs if u is not now] != [v.wire]:
            continue
        n = d.producer(now.wire)
        if n is None or n.op != "contract" or len(n.inputs) != 3:
            continue
        rest = [u for u in n.inputs if (u.wire, u.axes) not in ((q.wire, q.axes),
                                                                  (k.wire, k.axes))]
        if len(rest) != 1 or t in rest[0].axes or not all(plain(u) for u in n.inputs):
            continue
        return BonusMatch(past, q, k, v, log_a, rest[0])
    return None


def bonus_layout(u, heads: int, state: int):
    """A bonus [heads?, state?] (size-1 where it lacks the axis) as the kernel's [H, N]."""
    return u.expand(heads, state)


def bonus_rule(b: GraphBuilder, box: Box) -> bool:
    """The chunked forms' RWKV-6 read-out: one `gla(..., bonus=u)` call in place of the
    kernel over shifted keys and values plus the bonus product (which dead-code
    elimination then drops). Only for a decay per key channel with one heads axis."""
    from anatomy.kernels import gla
    m = match_bonus(b.d, box)
    if m is None:
        return False
    r = ssd_roles(b.d, m.ssd)
    la = b.use(m.log_a, current=True)
    if len(r.heads) != 1 or len(r.state) != 1 or la.layout is None or \
            r.state[0] not in la.layout or box.outputs[0] in b.float32_wires:
        return False
    h = r.heads
    q, k = b.use(m.q, current=True), b.use(m.k, current=True)
    on_q, on_k = all(a in q.layout for a in h), all(a in k.layout for a in h)
    g = h if on_q or on_k else ()
    q_t = _as_kernel_input(b, q, r.t, g, r.state, expand_heads=bool(g) and not on_q)
    k_t = _as_kernel_input(b, k, r.t, g, r.state, expand_heads=bool(g) and not on_k)
    v_t = _as_kernel_input(b, b.use(m.v, current=True), r.t, h, r.values, expand_heads=True)
    u = b.use(m.bonus)
    if u.layout is None or not set(u.layout) <= set(h + r.state):
        return False
    u_t = b.call(bonus_layout, b.align(u, h + r.state), b.size(h[0]), b.size(r.state[0]))
    log_a = _kernel_log_decay(b, la, r, v_t)
    _call_kernel(b, box, r, gla, (q_t, k_t, v_t, log_a),
                 {"chunk_size": m.ssd.attr("chunk", 64), "bonus": u_t})
    return True


def delta_roles(d, box: Box) -> SsdRoles:
    """The axes of a `delta_rule` box by role: o[t, H, P], state [H, N, P]."""
    (t,) = box.attr("along")
    k = box.inputs[1].axes
    out = d.wires[box.outputs[0]].axes
    heads = tuple(a for a in out if a != t and a in k)
    values = tuple(a for a in out if a != t and a not in k)
    return SsdRoles(t, heads, tuple(a for a in k if a not in out), values)


def lower_delta_rule(b: GraphBuilder, box: Box, initial_state=None):
    """Emit one call of the delta-rule kernel for a `delta_rule` box: the chunked (UT
    transform) form, or in the parallel form the recurrence itself. With an
    `initial_state` node (the step form), return the node of the final state."""
    from anatomy.kernels import delta_rule
    r = delta_roles(b.d, box)
    heads = r.heads
    q, k, v, beta, la = (b.use(u, current=True) for u in box.inputs)
    q_t = _as_kernel_input(b, q, r.t, heads, r.state, expand_heads=True)
    k_t = _as_kernel_input(b, k, r.t, heads, r.state, expand_heads=True)
    v_t = _as_kernel_input(b, v, r.t, heads, r.values, expand_heads=True)
    beta_t = b.call(ops.as_kernel_gate, b.align(beta, (BATCH, r.t) + heads), v_t, bool(heads),
                    ())
    # log_a = 0 is DeltaNet: no gate at all
    log_a = None if la.static and la.value == 0 else _kernel_log_decay(b, la, r, v_t)
    kwargs = {"log_a": log_a, "chunk_size": box.attr("chunk", 64)}
    if b.form == "parallel" or initial_state is not None:
        kwargs["backend"] = "recurrent"  # the defining recurrence, one token at a time
    return _call_kernel(b, box, r, delta_rule, (q_t, k_t, v_t, beta_t), kwargs, initial_state)

def state_shape(b: GraphBuilder, box: Box) -> tuple[int | None, int | None, int | None]:
    """(H, N, P) of the SSM state [B, H, N, P] an `ssd` box carries (None: not known)."""
    r = delta_roles(b.d, box) if box.op == "delta_rule" else ssd_roles(b.d, box)

    def size(axes):
        n = 1
        for a in axes:
            s = b.shapes.size(a)
            if s is None:
                return None
            n *= s
        return n
    return size(r.heads), size(r.state), size(r.values)


def _as_kernel_input(b: GraphBuilder, v: Val, time: str, heads: tuple[str, ...],
                     feats: tuple[str, ...], expand_heads: bool = False):
    """Lay a factor out as [B, T, G, F] (flattening feature axes, adding missing dims)."""
    target = (BATCH, time) + heads + feats
    node = b.align(v, target)
    n_heads = b.size(heads[0]) if heads and expand_heads else None
    return b.call(ops.kernel_layout, node, len(heads), len(feats), n_heads)


@dataclass(frozen=True)
class AttentionMatch:
    """o[t, H, P] = sum_s softmax_s(expr(scale * sum_N q[t, H, N] k[s, H, N]) + mask) v[s, H, P]
    where `expr` (lowering/softmax_bias.py) adds biases that are functions of positions and
    per-token decays, or modifies the score pointwise with constants."""

    score_box: Box
    softmax_box: Box
    weights: int          # index of the softmax factor in the mixing contraction
    value: int
    t: str
    s: str
    heads: tuple[str, ...]
    values: tuple[str, ...]
    q_rename: dict
    causal: bool
    query: int            # indices of q and k among the score contraction's inputs
    key: int
    state: tuple[str, ...]  # N: the summed feature axes of the score
    expr: tuple = ("score",)
    leaves: tuple = ()      # (kind, Val in the mixing contraction's names): "val", "segsum"
    window: int | None = None  # a sliding-window mask of this size (with causal)


def match_attention(b: GraphBuilder, box: Box) -> AttentionMatch | None:
    """Recognise softmax attention ending in this contraction (or None)."""
    d = b.d
    if box.op != "contract" or len(box.inputs) != 2:
        return None
    out = d.wires[box.outputs[0]].axes
    for iw, iv in ((0, 1), (1, 0)):
        sm = d.producer(box.inputs[iw].wire)
        if sm is None or sm.op != "softmax":
            continue
        to_c = dict(zip(d.wires[sm.outputs[0]].axes, box.inputs[iw].axes))
        s = to_c[sm.attr("along")[0]]
        if s in out:
            return None
        bias = _ScoreExpr(b, s)
        expr = bias.compile(sm.inputs[0], to_c)
        if expr is None or bias.score is None:
            return None
        score, q_rename = bias.score
        t = next((a for a in out if a in q_rename.values() and a != s), None)
        tensors = [u for u in score.inputs if u.axes]
        if t is None or len(tensors) != 2:
            return None
        positions = [i for i, u in enumerate(score.inputs) if u.axes]
        mapped = [tuple(q_rename.get(a, a) for a in u.axes) for u in tensors]
        if t in mapped[1]:
            positions, tensors, mapped = positions[::-1], tensors[::-1], mapped[::-1]
        if not (t in mapped[0] and s not in mapped[0] and s in mapped[1] and t not in mapped[1]):
            return None
        heads = tuple(a for a in out if a != t and a in q_rename.values())
        state = tuple(a for a in tensors[0].axes if a in tensors[1].axes
                      and a not in d.wires[score.outputs[0]].axes)
        if set(state) & set(heads + (t, s)):
            return None  # a feature axis named like a head or time axis: keep it explicit
        values = tuple(a for a in out if a != t and a not in heads)
        v_axes = box.inputs[iv].axes
        if any(a not in heads + values + (s,) for a in v_axes) or s not in v_axes:
            return None
        if any(pair != (t, s) for pair in bias.pairs) or not bias.positions <= {t, s}:
            return None  # a decay or index along other axes
        allowed = set(heads) | {t, s, BATCH}
        if any(v.layout is not None and not set(v.layout) <= allowed for _, v in bias.leaves):
            return None
        causal, window = bias.causal, None
        if len(sm.inputs) > 1:
            mask = d.producer(sm.inputs[1].wire)
            if mask is None or mask.op not in ("causal", "window"):
                return None  # other masks: the explicit graph
            m_axes = dict(zip(d.wires[sm.inputs[1].wire].axes, sm.inputs[1].axes))
            mt, ms = (to_c.get(m_axes[a], m_axes[a]) for a in mask.attr("along"))
            if (mt, ms) != (t, s):
                return None
            causal = True
            window = mask.attr("size") if mask.op == "window" else None
        return AttentionMatch(score, sm, iw, iv, t, s, heads, values, q_rename, causal,
                              positions[0], positions[1], state, expr, tuple(bias.leaves),
                              window)
    return None


class _ScoreExpr:
    """Compiles the softmax's input into a softmax_bias expression: the one q.k contraction
    becomes ("score",); index(t), index(s) and log(decay(...)) become positions and
    log-decays; values without time axes (constants, per-head parameters) and per-token
    values become leaves. Returns None for anything else (it stays on the explicit graph)."""

    def __init__(self, b: GraphBuilder, s: str):
        self.b, self.d, self.s = b, b.d, s
        self.score = None          # (the q.k contraction, its axes in the mixing names)
        self.leaves: list = []
        self.pairs: list = []      # (query, key) axes of every decay, in the mixing names
        self.causal = False        # a decay's log is -inf above the diagonal
        self.positions: set = set()  # the axes of index(...) boxes, in the mixing names

    def leaf(self, kind: str, val: Val) -> tuple:
        self.leaves.append((kind, val))
        return ("segsum" if kind == "segsum" else "leaf", len(self.leaves) - 1)

    def compile(self, use, rename: dict):
        d, b = self.d, self.b
        if not use.axes:
            v = b.use(use)
            return ("const", v.value) if v.static else self.leaf("val", v)
        wmap = {a: rename.get(ua, ua) for a, ua in zip(d.wires[use.wire].axes, use.axes)}
        box = d.producer(use.wire)
        if box is None:  # an input port: a per-token value (a document id, a position)
            return self.value(use, wmap)
        tensors = [u for u in box.inputs if u.axes]
        if box.op == "contract" and len(tensors) == 2 and self.score is None and \
                {a for u in tensors for a in u.axes} - set(d.wires[box.outputs[0]].axes):
            self.score = (box, wmap)  # sums its feature axes: the q.k score
            return ("score",)
        if box.op == "index":
            axis = wmap[box.attr("axis")]
            if b.shapes.sizes.find(axis) == b.shapes.sizes.find(self.s):
                self.positions.add(axis)
                return ("s",) if axis == self.s else ("t",)
            return self.value(use, wmap)
        if box.op == "log" and d.producer(box.inputs[0].wire) is not None and \
                d.producer(box.inputs[0].wire).op == "decay":
            inner = {a: wmap.get(ua, ua) for a, ua in
                     zip(d.wires[box.inputs[0].wire].axes, box.inputs[0].axes)}
            return self.log_decay(d.producer(box.inputs[0].wire), inner)
        if box.op == "decay":
            log = self.log_decay(box, wmap)
            return None if log is None else ("exp", log)
        out = set(d.wires[box.outputs[0]].axes)
        if box.op in ("contract", "add", "sub", "div", "pow", "neg") or box.op in ops.POINTWISE:
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

    def value(self, use, wmap: dict):
        """A wire used as it is (no time axes, or only the query axis): a leaf."""
        v = self.b.use(use)
        if v.layout is None:
            return ("const", v.value) if v.static else self.leaf("val", v)
        seen = dict(zip(use.axes, (wmap[a] for a in self.d.wires[use.wire].axes)))
        return self.leaf("val", Val(v.value, tuple(seen.get(a, a) for a in v.layout)))

    def log_decay(self, box: Box, wmap: dict):
        """log decay(log_a, t, s): c[t] - c[s] (per-token log_a) or (t - s) log_gamma."""
        q, k = box.attr("along")
        self.pairs.append((wmap[q], wmap[k]))
        self.causal = True
        la_use = box.inputs[0]
        if q not in la_use.axes:
            slope = self.compile(la_use, wmap)
            return None if slope is None else ("ramp", slope)
        v = self.b.use(la_use)
        if v.layout is None:
            return None
        seen = dict(zip(la_use.axes, (wmap.get(a, a) for a in la_use.axes)))
        return self.leaf("segsum", Val(v.value, tuple(seen.get(a, a) for a in v.layout)))


def lower_attention(b: GraphBuilder, box: Box, m: AttentionMatch, end=None) -> None:
    """Emit the fused softmax attention of a match: scaled_dot_product_attention for a plain
    (or causal) score, else lowering/softmax_bias.py's softmax_attention. `end` (the step
    form): the position after the last query, when the queries are the last keys."""
    from .softmax_bias import softmax_attention
    score, state = m.score_box, m.state
    q, k = b.use(score.inputs[m.query]), b.use(score.inputs[m.key])
    q = Val(q.value, tuple(m.q_rename.get(a, a) for a in q.layout))
    k = Val(k.value, tuple(m.q_rename.get(a, a) for a in k.layout))
    scale = b.scalar_product([b.use(u).value for u in score.inputs if not u.axes])
    v = b.use(box.inputs[m.value])
    q_t = b.align(q, (BATCH,) + m.heads + (m.t,) + state)
    k_t = b.align(k, (BATCH,) + m.heads + (m.s,) + state)
    v_t = b.align(v, (BATCH,) + m.heads + (m.s,) + m.values)
    sizes = tuple(b.size(a) for a in m.values)
    if m.expr == ("score",) and m.window is None and (end is None or not m.causal):
        node = b.call(ops.attention, q_t, k_t, v_t, len(state), sizes, scale=scale,
                      is_causal=m.causal, name=box.outputs[0])
    else:
        leaves = [b.cumulative_log_decay(b.align(val, (BATCH,) + m.heads + (m.t,)), m.window)
                  if kind == "segsum" else b.align(val, (BATCH,) + m.heads + (m.t, m.s))
                  for kind, val in m.leaves]
        node = b.call(softmax_attention, q_t, k_t, v_t, len(state), sizes, m.expr, *leaves,
                      scale=scale, causal=m.causal, window=m.window, end=end,
                      name=box.outputs[0])
    b.store(box, node, (BATCH,) + m.heads + (m.t,) + m.values)


def attention_rule(b: GraphBuilder, box: Box) -> bool:
    """The auto form's fused softmax attention."""
    m = match_attention(b, box)
    if m is None:
        return False
    lower_attention(b, box, m)
    return True


def _auto_rules(b: GraphBuilder, box: Box) -> bool:
    return attention_rule(b, box) or bonus_rule(b, box)


def choose_rules(form: str):
    """The box-lowering hook for this form (None: every box lowered as written)."""
    return {"auto": _auto_rules, "chunked": bonus_rule}.get(form)


def structured_forms(d, shapes):
    """The diagram the chunked and recurrent forms run: the rewrite engine's lowering rules
    (anatomy.rewrite.rules.LOWERING, e.g. masked linear attention = `ssd`) applied wherever
    they match. Returns the rewritten diagram and its shapes."""
    from anatomy.rewrite import lower
    rewritten = lower(d, shapes)
    return rewritten, rewritten.shapes
