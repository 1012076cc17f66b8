"""The torch lowering of an `attention` box (fused softmax attention, made by the rewrite rule
`fuse_attention` in the auto form): scaled_dot_product_attention for the bare score without
a window, else lowering/softmax_bias.py's softmax_attention (FlexAttention, or the
materialised or query-chunked softmax)."""

from __future__ import annotations

from anatomy.ir import Box
from anatomy.ops import attention_roles

from . import torch_ops as ops
from .graph import BATCH, GraphBuilder, Val


def lower_attention(b: GraphBuilder, box: Box, end=None) -> None:
    """Emit the fused softmax attention of an `attention` box. `end` (the step form): the
    position after the last query, when the queries are the last keys."""
    from .softmax_bias import softmax_attention
    t, s = box.attr("along")
    out = b.d.wires[box.outputs[0]].axes
    heads, state, values = attention_roles(tuple(u.axes for u in box.inputs), (t, s), out)
    n_scales = box.attr("scales", 0)
    scale = b.scalar_product([box.attr("scale", 1.0)]
                             + [b.use(u).value for u in box.inputs[3:3 + n_scales]])
    q, k, v = (b.use(u) for u in box.inputs[:3])
    q_t = b.align(q, (BATCH,) + heads + (t,) + state)
    k_t = b.align(k, (BATCH,) + heads + (s,) + state)
    v_t = b.align(v, (BATCH,) + heads + (s,) + values)
    sizes = tuple(b.size(a) for a in values)
    causal, window = box.attr("causal", False), box.attr("window", 0) or None
    expr, leaves = fold_static_leaves(box.attr("expr", ("score",)), box.attr("leaves", ()),
                                      [b.use(u) for u in box.inputs[3 + n_scales:]])
    if expr == ("score",) and window is None and (end is None or not causal):
        node = b.call(ops.attention, q_t, k_t, v_t, len(state), sizes, scale=scale,
                      is_causal=causal, name=box.outputs[0])
    else:
        nodes = [b.cumulative_log_decay(b.align(val, (BATCH,) + heads + (t,)), window)
                 if kind == "segsum" else b.align(val, (BATCH,) + heads + (t, s))
                 for kind, val in leaves]
        node = b.call(softmax_attention, q_t, k_t, v_t, len(state), sizes, expr, *nodes,
                      scale=scale, causal=causal, window=window, end=end,
                      name=box.outputs[0])
    b.store(box, node, (BATCH,) + heads + (t,) + values)


def fold_static_leaves(expr: tuple, kinds: tuple, vals: list[Val]):
    """The expression with the leaves known now (numbers) written in as ("const", c), the
    other leaves renumbered in order; returns (expr, [(kind, Val)])."""
    kept = [i for i, v in enumerate(vals) if kinds[i] == "segsum" or not v.static]
    index = {i: n for n, i in enumerate(kept)}

    def walk(e):
        if e[0] in ("leaf", "segsum"):
            i = e[1]
            return (e[0], index[i]) if i in index else ("const", vals[i].value)
        if e[0] in ("score", "t", "s", "const"):
            return e
        return (e[0], *(walk(x) for x in e[1:]))
    return walk(expr), [(kinds[i], vals[i]) for i in kept]
