"""The fast path of variable-length batches: packed sequences through one graph.

A module whose every box either works token by token or is a chunked kernel (`ssd`,
`delta_rule`: SSD, gated linear attention, the delta rule) runs a packed batch once: a copy
of its forward graph takes `cu_seqlens`, and in it

- each kernel call runs once per sequence from a zero state (kernels/varlen.py), so the
  state resets at every boundary;
- `shift` along time fills each sequence's first (or last) steps with zeros;
- `rope` and `xpos` count positions from each sequence's start.

A padded batch (`attention_mask`) is unpadded into packed sequences, run, and padded back
with zeros. Anything else in a diagram (softmax or sums over the key axis, decays or masks
written out, `index` or `size` of time, norms or scans along time, composites) sends the
batch sequence by sequence (lowering/varlen.py); `why_not_packed` says which box did.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor, fx

from . import torch_ops as ops

KERNEL_OPS = ("ssd", "ssd_bonus", "delta_rule", "scan")  # recurrences along time: reset per sequence
POSITIONAL_OPS = ("shift", "rope", "xpos")  # along time: made per sequence below


def lowered(module):
    """The diagram and shapes the module's forward graph was built from."""
    from .forms import structured_forms
    return structured_forms(module.diagram, module.shapes, module.form)


def why_not_packed(d, shapes, absorbed: frozenset = frozenset()) -> str | None:
    """None if every box works token by token or is a chunked kernel along time; else the
    first box that reads across time, and how. `absorbed`: ids of boxes the fused softmax
    attention runs (`fused_attention_boxes`), which the packed graph masks per sequence."""
    t = d.time_axis
    if t is None:
        return "no time axis"
    find = shapes.sizes.find

    def timed(a: str) -> bool:
        return find(a) == find(t)

    for box in d.boxes:
        if box.id in absorbed:
            continue
        where = f"`{box.outputs[0]}` ({box.op})" if box.outputs else box.op
        if box.op == "call":
            why = _call_time(d, box, timed, t)
            if why:
                return f"{where} {why}"
            continue
        axes = [u.axes for u in box.inputs] + [d.wires[w].axes for w in box.outputs]
        if any(timed(a) and a != t for ax in axes for a in ax):
            return f"{where} reads along a key axis"
        along = tuple(box.attr("along") or ()) + ((box.attr("axis"),) if box.attr("axis")
                                                  else ())
        if box.op in KERNEL_OPS + POSITIONAL_OPS:
            if along[:1] != (t,):  # the packed graph remaps every such call along time
                return f"{where} runs along {along[0]}, not time"
            continue
        if any(timed(a) for a in along):
            return f"{where} runs along time"
        if any(t in u.axes for u in box.inputs) and \
                not all(t in d.wires[w].axes for w in box.outputs):
            return f"{where} sums over time"
        if not any(t in u.axes for u in box.inputs) and \
                any(t in d.wires[w].axes for w in box.outputs):
            return f"{where} makes values indexed by position"
    return None


def _call_time(d, box, timed, t) -> str | None:
    """Why a composite cannot take our packed sequences (None: it can, its own time axis
    being ours, so it runs them packed or one by one itself)."""
    callee = d.program.anatomies[box.attr("anatomy")]
    ct = callee.time_axis
    for port, u in zip(callee.inputs, box.inputs):
        for mine, theirs in zip(u.axes, port.axes):
            if (mine == t) != (theirs == ct) or (timed(mine) and mine != t):
                return "does not run along our time axis"
    for port, w in zip(callee.outputs, box.outputs):
        if (t in d.wires[w].axes) != (ct in port.axes):
            return "does not run along our time axis"
    return None


def packed_graph_module(module) -> fx.GraphModule | None:
    """The forward graph with a `cu_seqlens` input (None: the module cannot run packed).
    Built once per module."""
    cache = module.__dict__
    if "_packed_gm" not in cache:
        d, shapes = lowered(module)
        absorbed = fused_attention_boxes(module, d, shapes)
        cache["_packed_gm"] = None if why_not_packed(d, shapes, absorbed) else \
            _build(module, _expected_calls(d, absorbed))
    return cache["_packed_gm"]


def _expected_calls(d, absorbed: frozenset) -> dict:
    """How many calls of each kind the packed graph must remap: one per box."""
    kinds = {"ssd": "kernel", "ssd_bonus": "kernel", "delta_rule": "kernel", "scan": "scan", "shift": "shift",
             "rope": "rotary", "xpos": "rotary", "call": "call"}
    want = {k: 0 for k in (*kinds.values(), "attention")}
    for box in d.boxes:
        if box.op in kinds:
            want[kinds[box.op]] += 1
    want["attention"] = len([b for b in d.boxes if b.id in absorbed])
    return want


def fused_attention_boxes(module, d, shapes) -> frozenset:
    """The ids of the `attention` boxes (the auto form's fused softmax attention) that run
    as a plain or causal `ops.attention` (no score expression, no window): the packed graph
    masks them per sequence. (Attention with biases or windows runs per sequence.)"""
    return frozenset(b.id for b in d.boxes if b.op == "attention"
                     and b.attr("expr", ("score",)) == ("score",) and not b.attr("window"))


def _build(module, want: dict) -> fx.GraphModule | None:
    """The packed copy of the forward graph; None (run per sequence) unless it remapped
    calls of every kind that `want` counts boxes of, and no more calls than boxes (a lowering
    that emits its calls differently must not run packed, carrying a state or a position
    across sequences)."""
    from anatomy.kernels import delta_rule, gla, ssd
    from anatomy.kernels.varlen import delta_rule_packed, gla_packed, ssd_packed
    graph = fx.Graph()
    env: dict = {}
    out = graph.graph_copy(module.graph, env)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    with graph.inserting_after(placeholders[-1]):
        cu = graph.placeholder("cu_seqlens")
    with graph.inserting_after(cu):
        like = placeholders[0]
        offsets = graph.call_function(position_offsets, (cu, like))
    kernels = {ssd: ssd_packed, gla: gla_packed, delta_rule: delta_rule_packed}
    got = dict.fromkeys(want, 0)
    for node in list(graph.nodes):
        if node.op == "call_module":  # a composite: it takes the packed sequences itself
            with graph.inserting_before(node):
                sub = graph.get_attr(node.target)
            node.op, node.target, node.args = "call_function", packed_call, (sub, cu, *node.args)
            got["call"] += 1
            continue
        if node.op != "call_function":
            continue
        if node.target is ops.scan:
            node.args = (*node.args, cu)  # (u, log_a, dim)
            node.target, kind = packed_scan, "scan"
        elif node.target in kernels:
            node.args = (cu, *node.args)
            node.target, kind = kernels[node.target], "kernel"
        elif node.target is ops.shift:
            node.args = (*node.args, cu)  # (x, dim, by)
            node.target, kind = packed_shift, "shift"
        elif node.target is ops.attention:
            node.args = (cu, *node.args)
            node.target, kind = packed_attention, "attention"
        elif node.target in (ops.rope, ops.xpos):
            node.kwargs = {**node.kwargs, "offset": offsets}
            kind = "rotary"
        else:
            continue
        got[kind] += 1
    if any((got[k] == 0) != (want[k] == 0) or got[k] > want[k] for k in want):
        return None  # (fewer calls than boxes: the builder shares equal ones)
    graph.output(out)
    graph.lint()
    gm = fx.GraphModule(module, graph, class_name=f"{module.diagram.name}_packed")
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def position_offsets(cu_seqlens: Tensor, like: Tensor) -> Tensor:
    """Minus each token's sequence start [T]: the packed position plus this is the position
    within its own sequence."""
    cu = cu_seqlens.to(like.device, torch.long)
    lengths = cu[1:] - cu[:-1]
    return -torch.repeat_interleave(cu[:-1], lengths)


def packed_attention(cu_seqlens: Tensor, q: Tensor, k: Tensor, v: Tensor, n_state: int,
                     value_sizes: tuple, scale=1.0, is_causal: bool = False) -> Tensor:
    """`ops.attention` with a block-diagonal (document) mask: each query attends only to
    the keys of its own sequence (and, causal, not after itself)."""
    from torch.nn import functional as F
    q, k, v = ops._attention_inputs(q, k, v, n_state, value_sizes)
    cu = cu_seqlens.to(q.device, torch.long)
    lengths = cu[1:] - cu[:-1]
    seq = torch.repeat_interleave(torch.arange(len(lengths), device=q.device), lengths)
    mask = seq[:, None] == seq[None, :]
    if is_causal:
        mask = mask.tril()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=float(scale))
    return ops._attention_output(out, value_sizes)


def packed_call(module, cu_seqlens: Tensor, *inputs):
    """A composite on packed sequences (its own packed graph, or one sequence at a time)."""
    return module(*inputs, cu_seqlens=cu_seqlens)


def packed_scan(u: Tensor, log_a, dim: int, cu_seqlens: Tensor) -> Tensor:
    """`scan` of each packed sequence alone, from a zero state."""
    from anatomy.kernels.varlen import boundaries
    cu = boundaries(cu_seqlens)
    parts = []
    for a, b in pairwise(cu):
        if b > a:
            la = log_a.narrow(dim, a, b - a) if isinstance(log_a, Tensor) and \
                log_a.dim() > dim and log_a.shape[dim] == u.shape[dim] else log_a
            parts.append(ops.scan(u.narrow(dim, a, b - a), la, dim))
    return torch.cat(parts, dim)


def packed_shift(x: Tensor, dim: int, by: int, cu_seqlens: Tensor) -> Tensor:
    """`shift` of each packed sequence alone: steps that would come from the neighbouring
    sequence are zero."""
    y = ops.shift(x, dim, by)
    cu = cu_seqlens.to(x.device, torch.long)
    lengths = cu[1:] - cu[:-1]
    pos = torch.arange(x.shape[dim], device=x.device) + position_offsets(cu, x)
    keep = pos >= by if by >= 0 else pos < torch.repeat_interleave(lengths, lengths) + by
    shape = [1] * x.dim()
    shape[dim] = -1
    return y * keep.view(shape).to(y.dtype)


def unpad(inputs: list, time_dims: list, idx: Tensor) -> list:
    """Padded inputs [B, T, ...] -> packed [1, n, ...]: the tokens at flat positions `idx`
    (row-major over batch and time). Inputs without a time axis must have batch 1."""
    out = []
    for x, d in zip(inputs, time_dims):
        if d is None:
            out.append(x)
            continue
        moved = x.movedim(d, 1)
        flat = moved.reshape(-1, *moved.shape[2:]).index_select(0, idx)
        out.append(flat.unsqueeze(0).movedim(1, d))
    return out


def pad(y: Tensor, d: int | None, idx: Tensor, batch: int, time: int) -> Tensor:
    """A packed output [1, n, ...] back to [B, T, ...], zeros at the padding."""
    moved = y.movedim(d, 1)[0]
    flat = moved.new_zeros(batch * time, *moved.shape[1:]).index_copy(0, idx, moved)
    return flat.view(batch, time, *moved.shape[1:]).movedim(1, d)
