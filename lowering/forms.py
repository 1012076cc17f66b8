"""Execution forms: how structured boxes run, and which boxes get a fused lowering.

- parallel: every box lowered as written (the quadratic, masked form).
- chunked: the diagram is first rewritten by the rewrite engine's proven lowering rules
  (`anatomy.rewrite.lower`): masked linear attention becomes an `ssd` box, which runs
  through `anatomy.kernels.ssd` (linear in T), or `anatomy.kernels.gla` for a decay per key
  channel (`ssd_bonus`, RWKV-6's read-out: the state before the step plus the current
  token's bonus term, made by the rule fuse_bonus, runs `gla(..., bonus=u)`). Nothing here
  matches zoo names.
- auto: chunked, plus softmax attention as one `attention` box (the rewrite rule
  `fuse_attention`), which runs through scaled_dot_product_attention (no mask or causal),
  or FlexAttention (sliding windows; pointwise score modifications with constants):
  lowering/attention.py.
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
    """The roles of an `ssd` (or `ssd_bonus`) box's axes."""
    q, k, _, log_a = (u.axes for u in box.inputs[:4])
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

def bonus_layout(u, heads: int, state: int):
    """A bonus [heads?, state?] (size-1 where it lacks the axis) as the kernel's [H, N]."""
    return u.expand(heads, state)


def lower_ssd_bonus(b: GraphBuilder, box: Box, initial_state=None):
    """Emit one `gla(..., bonus=u)` call for an `ssd_bonus` box (RWKV-6's read-out: one
    heads axis, one state axis, a decay per key channel; the rule fuse_bonus checks).
    With an `initial_state` node (the step form), return the node of the final state."""
    from anatomy.kernels import gla
    r = ssd_roles(b.d, box)
    h = r.heads
    q, k, v, la = (b.use(u, current=True) for u in box.inputs[:4])
    on_q, on_k = all(a in q.layout for a in h), all(a in k.layout for a in h)
    g = h if on_q or on_k else ()
    q_t = _as_kernel_input(b, q, r.t, g, r.state, expand_heads=bool(g) and not on_q)
    k_t = _as_kernel_input(b, k, r.t, g, r.state, expand_heads=bool(g) and not on_k)
    v_t = _as_kernel_input(b, v, r.t, h, r.values, expand_heads=True)
    u = b.use(box.inputs[4])
    u_t = b.call(bonus_layout, b.align(u, h + r.state), b.size(h[0]), b.size(r.state[0]))
    log_a = _kernel_log_decay(b, la, r, v_t)
    return _call_kernel(b, box, r, gla, (q_t, k_t, v_t, log_a),
                        {"chunk_size": box.attr("chunk", 64), "bonus": u_t}, initial_state)


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


def structured_forms(d, shapes, form: str = "chunked"):
    """The diagram an execution form runs: the rewrite engine's lowering rules for the form
    (anatomy.rewrite.rules.LOWERING[form]: masked linear attention = `ssd`, and in the auto
    form softmax attention = `attention`) applied wherever they match. Returns the
    rewritten diagram and its shapes."""
    from anatomy.rewrite import LOWERING, lower
    if not LOWERING[form]:
        return d, shapes
    rewritten = _keep_params(d, lower(d, shapes, form))
    return rewritten, rewritten.shapes


def _keep_params(d, rewritten):
    """The rewritten diagram with the parameter boxes its rewrites dropped as unread put
    back: the module keeps every declared weight in every form (a state_dict loads into
    each alike)."""
    from anatomy.shapes import checked
    kept = {b.id for b in rewritten.boxes}
    lost = [b for b in d.boxes if b.op == "param" and b.id not in kept]
    if not lost:
        return rewritten
    wires = {**rewritten.wires, **{b.outputs[0]: d.wires[b.outputs[0]] for b in lost}}
    return checked(rewritten.replace(wires=wires, boxes=lost + list(rewritten.boxes)),
                   dict(rewritten.shapes.dims))
