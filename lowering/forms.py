"""Execution forms: how structured boxes run, and which boxes get a fused lowering.

- parallel: every box lowered as written (the quadratic, masked form).
- chunked: the diagram is first rewritten by the rewrite engine's proven lowering rules
  (`anatomy.rewrite.lower`): masked linear attention becomes an `ssd` box, which runs
  through `anatomy.kernels.ssd` (linear in T). Nothing here matches zoo names or patterns.
- auto: chunked, plus softmax attention through scaled_dot_product_attention (no mask or
  causal), or FlexAttention (sliding windows; pointwise score modifications with constants).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from anatomy.errors import AnatError
from anatomy.ir import Box
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
    """Emit one call of the chunked SSD kernel for an `ssd` box. With an `initial_state`
    node (the step form), return the node of the final state."""
    from anatomy.kernels import ssd
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
    if la.layout is None:
        log_a = b.call(ops.constant_log_decay, v_t, la.value)
    else:
        has_time = r.t in la.layout  # without it: a constant decay, the same at every step
        target = ((BATCH,) if la.batched else ()) + ((r.t,) if has_time else ()) + heads
        log_a = b.call(ops.as_log_decay, b.align(la, target), v_t, la.batched, has_time,
                       bool(heads))
    chunk = box.attr("chunk", 64)
    final = None
    if initial_state is None:
        y = b.call(ssd, q_t, k_t, v_t, log_a, chunk_size=chunk, name=box.outputs[0])
    else:
        both = b.call(ssd, q_t, k_t, v_t, log_a, chunk_size=chunk,
                      initial_state=initial_state, output_final_state=True)
        y = b.call(operator.getitem, both, 0, name=box.outputs[0])
        final = b.call(operator.getitem, both, 1)
    # y: [B, T, H, P_flat] -> natural layout (B, t, heads..., values...)
    sizes = tuple(b.size(a) for a in values)
    y = b.call(ops.unflatten_values, y, bool(heads), sizes)
    b.store(box, y, (BATCH, r.t) + heads + values)
    return final


def state_shape(b: GraphBuilder, box: Box) -> tuple[int | None, int | None, int | None]:
    """(H, N, P) of the SSM state [B, H, N, P] an `ssd` box carries (None: not known)."""
    r = ssd_roles(b.d, box)

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
    """o[t, H, P] = sum_s softmax_s(scale * sum_N q[t, H, N] k[s, H, N] (+ mask)) v[s, H, P]."""

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
    score_mods: tuple = ()  # pointwise steps from the score to the softmax: (op, c, c_first)
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
        chain = _score_chain(b, sm.inputs[0], to_c)
        if chain is None:
            return None
        score, q_rename, score_mods = chain
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
        causal, window = False, None
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
                              positions[0], positions[1], state, score_mods, window)
    return None


def _score_chain(b: GraphBuilder, use, to_c: dict):
    """Walk back from the softmax's input through pointwise boxes with constant operands
    (a score modification, e.g. soft-capping) to the q.k contraction. Returns the score
    contraction, its axes renamed into the mixing contraction's names, and the steps."""
    d = b.d
    mods = []
    rename = dict(to_c)
    while True:
        box = d.producer(use.wire)
        if box is None:
            return None
        here = dict(zip(d.wires[use.wire].axes, use.axes))  # box's names -> consumer's
        rename = {a: rename.get(here_b, here_b) for a, here_b in here.items()}
        tensors = [u for u in box.inputs if u.axes]
        consts = [u for u in box.inputs if not u.axes]
        if box.op == "contract" and len(tensors) == 2:
            if mods and any(not b.use(u).static for u in consts):
                return None
            return box, rename, tuple(reversed(mods))
        if len(tensors) != 1 or any(not b.use(u).static for u in consts):
            return None
        if set(tensors[0].axes) != set(d.wires[box.outputs[0]].axes):
            return None  # not pointwise (a sum or a broadcast)
        if box.op in ops.POINTWISE or box.op == "neg":
            mods.append((box.op, None, False))
        elif box.op in ("add", "sub", "div", "pow") and len(consts) == 1:
            first = box.inputs[0] is consts[0]
            mods.append((box.op, b.use(consts[0]).value, first))
        elif box.op == "contract" and consts:
            value = 1.0
            for u in consts:
                value *= b.use(u).value
            mods.append(("mul", value, False))
        else:
            return None
        use = tensors[0]


def lower_attention(b: GraphBuilder, box: Box, m: AttentionMatch) -> None:
    """Emit torch's scaled_dot_product_attention for a matched softmax attention."""
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
    if m.score_mods or m.window is not None:
        node = b.call(ops.flex_attention, q_t, k_t, v_t, len(state), sizes, scale=scale,
                      score_mods=m.score_mods, causal=m.causal, window=m.window,
                      name=box.outputs[0])
    else:
        node = b.call(ops.attention, q_t, k_t, v_t, len(state), sizes, scale=scale,
                      is_causal=m.causal, name=box.outputs[0])
    b.store(box, node, (BATCH,) + m.heads + (m.t,) + m.values)


def attention_rule(b: GraphBuilder, box: Box) -> bool:
    """The auto form's fused softmax attention."""
    m = match_attention(b, box)
    if m is None:
        return False
    lower_attention(b, box, m)
    return True


def choose_rules(form: str):
    """The box-lowering hook for this form (None: every box lowered as written)."""
    return attention_rule if form == "auto" else None


def structured_forms(d, shapes):
    """The diagram the chunked and recurrent forms run: the rewrite engine's lowering rules
    (anatomy.rewrite.rules.LOWERING, e.g. masked linear attention = `ssd`) applied wherever
    they match. Returns the rewritten diagram and its shapes."""
    from anatomy.rewrite import lower
    rewritten = lower(d, shapes)
    return rewritten, rewritten.shapes
