"""IR -> torch.fx.Graph: a structure-preserving map, one FX node (or a small named group) per
box, composite boxes as submodules, parameters as attributes named after their wires.

Every tensor value carries a static layout: its axis names in order, with BATCH first for
values that depend on the inputs. Layouts are resolved here, at lowering time, into dims
and permutations, so the generated code is plain tensor calls.
"""

from __future__ import annotations

import math
import operator
import string
from dataclasses import dataclass
from math import prod
from typing import Any

import torch
from torch import fx, nn

from anatomy.errors import AnatError
from anatomy.ir import Box, Diagram, Use
from anatomy.ops import OPS
from anatomy.shapes import Shapes

from . import torch_ops as ops
from .broadcast import expand_over

BATCH = "$batch"
ACTIVATIONS = frozenset(ops.POINTWISE)
_BINARY = {"add": operator.add, "sub": operator.sub, "div": operator.truediv,
           "pow": operator.pow}


@dataclass(frozen=True)
class Val:
    """A lowered wire: an FX node or a static Python scalar, and its layout (None: scalar)."""

    value: Any
    layout: tuple[str, ...] | None

    @property
    def static(self) -> bool:
        return not isinstance(self.value, fx.Node)

    @property
    def batched(self) -> bool:
        return self.layout is not None and BATCH in self.layout


class GraphBuilder:
    """Lowers one checked diagram into `graph`, registering parameters on `owner`: one
    lowering per box (`_box_<op>`). The execution forms choose boxes before this, with the
    rewrite engine's lowering rules (chunked kernels, fused softmax attention)."""

    def __init__(self, diagram: Diagram, shapes: Shapes, owner: nn.Module,
                 form: str = "auto"):
        self.d, self.shapes, self.owner = diagram, shapes, owner
        self.form = form
        self.g = fx.Graph()
        self.vals: dict[str, Val] = {}
        self.size_nodes: dict[str, fx.Node] = {}
        self.like: fx.Node | None = None
        # the sums on either side of a division by a tensor (a normaliser's numerator and
        # denominator) are accumulated and divided in float32 for half-precision inputs
        made = {w: b.op for b in diagram.boxes for w in b.outputs}
        self.float32_wires = {u.wire for b in diagram.boxes if b.op == "div"
                              and diagram.wires[b.inputs[1].wire].axes for u in b.inputs
                              if made.get(u.wire) in ("contract", "ssd", "attention")}

    # -- entry ----------------------------------------------------------------------------
    def build(self) -> fx.Graph:
        for p in self.d.inputs:
            node = self.g.placeholder(p.name)
            self.vals[p.name] = Val(node, (BATCH,) + p.axes)
            if self.like is None:
                self.like = node
        from .module import check_inputs, input_spec
        self.call(check_inputs, input_spec(self.d, self.shapes),
                  *(self.vals[p.name].value for p in self.d.inputs))
        for box in self.d.boxes:
            self.lower(box)
        outs = [self.batched_output(self.vals[p.name]) for p in self.d.outputs]
        self.g.output(outs[0] if len(outs) == 1 else tuple(outs))
        self.g.lint()
        return self.g

    # -- helpers --------------------------------------------------------------------------
    def call(self, fn, *args, name: str | None = None, **kwargs) -> fx.Node:
        return self.g.create_node("call_function", fn, args, kwargs, name=name)

    def size(self, axis: str):
        """The size of an axis: an int, or an FX node reading it off an input at run time."""
        n = self.shapes.size(axis)
        if n is not None:
            return n
        root = self.shapes.sizes.find(axis)
        if root in self.size_nodes:
            return self.size_nodes[root]
        for p in self.d.inputs:
            for i, a in enumerate(p.axes):
                if self.shapes.sizes.find(a) == root:
                    node = self.g.create_node("call_method", "size",
                                              (self.vals[p.name].value, i + 1),
                                              name=f"size_{axis}")
                    self.size_nodes[root] = node
                    return node
        raise AnatError(f"the size of axis {axis} is not known from the inputs of "
                        f"{self.d.name}", hint=f"declare it: `dims {axis} = ...`")

    def use(self, u: Use, current: bool = False) -> Val:
        """The value of a wire seen through a box's axis names (positional renaming).
        (`current` matters to the step form only: this chunk, not the whole history.)"""
        v = self.vals[u.wire]
        if v.layout is None:
            return v
        rename = dict(zip(self.d.wires[u.wire].axes, u.axes))
        return Val(v.value, tuple(rename.get(a, a) if a != BATCH else a for a in v.layout))

    def align(self, v: Val, target: tuple[str, ...]) -> Any:
        """Permute `v` into the order of `target`, with size-1 dims for axes it lacks."""
        if v.layout is None:
            return v.value
        missing = [a for a in v.layout if a not in target]
        if missing:  # pragma: no cover - the checker guarantees this
            raise AssertionError(f"cannot align {v.layout} to {target}")
        present = [a for a in target if a in v.layout]
        perm = tuple(v.layout.index(a) for a in present)
        expand_at = tuple(i for i, a in enumerate(target) if a not in v.layout)
        if perm == tuple(range(len(perm))) and not expand_at:
            return v.value
        return self.call(ops.align, v.value, perm, expand_at)

    def scalar_product(self, values: list):
        """The product of scalars: constants folded now, run-time ones (nodes) multiplied in."""
        scale: Any = math.prod((v for v in values if not isinstance(v, fx.Node)), start=1.0)
        for v in values:
            if isinstance(v, fx.Node):
                scale = self.call(operator.mul, scale, v)
        return scale

    def out_layout(self, box: Box, batched: bool, wire: str | None = None) -> tuple[str, ...]:
        axes = self.d.wires[wire or box.outputs[0]].axes
        return ((BATCH,) if batched else ()) + axes

    def store(self, box: Box, value: Any, layout: tuple[str, ...] | None,
              wire: str | None = None) -> None:
        """Record a box's output, permuted into its wire's declared axis order."""
        wire = wire or box.outputs[0]
        if layout is None:
            self.vals[wire] = Val(value, None)
            return
        target = self.out_layout(box, BATCH in layout, wire)
        if isinstance(value, fx.Node) and value.op == "call_function" and \
                not self.d.wires[wire].anonymous:
            value._rename(wire)  # the generated code reads like the diagram
        self.vals[wire] = Val(self.align(Val(value, layout), target), target)

    def cumulative_log_decay(self, log_a, window: int | None = None):
        """The cumulative log-decays [B, heads..., T] of every key a fused softmax sees
        (its window matters to the step form only)."""
        from .softmax_bias import cumulative_log_decay
        return self.call(cumulative_log_decay, log_a)

    def batched_output(self, v: Val):
        if v.batched:
            return v.value
        if v.layout is None:
            raise AnatError(f"an output of {self.d.name} is a constant scalar")
        batch = self.g.call_method("size", (self.like, 0))
        node = self.call(ops.align, v.value, tuple(range(len(v.layout))), (0,))
        return self.g.call_method("expand", (node, batch) + (-1,) * len(v.layout))

    # -- boxes ----------------------------------------------------------------------------
    def lower(self, box: Box) -> None:
        op = box.op
        method = getattr(self, f"_box_{op}", None)
        if method is not None:
            method(box)
        elif op in ACTIVATIONS:
            self._activation(box)
        elif op in _BINARY:
            self._binary(box)
        else:  # pragma: no cover - every op of anatomy.ops is handled above
            raise NotImplementedError(f"no lowering for box {op}")

    def _box_param(self, box: Box) -> None:
        name = box.outputs[0]
        w = self.d.wires[name]
        for a in w.axes:
            if self.shapes.size(a) is None:
                root = self.shapes.sizes.find(a)
                raise AnatError(f"axis {a} of parameter {name} has no size", box.loc,
                                hint=f"give dim {root} a value: a default in `dims`, or "
                                     f"compile(..., {root}=...)")
        shape = tuple(self.size(a) for a in w.axes)
        init = box.attr("init") or ("normal", 0.02)
        fan_axes = init[1:] if init[0] == "fan_in" else ()
        fan_in = prod(self.size(a) for a in fan_axes) if fan_axes else 1
        param = nn.Parameter(torch.empty(shape))
        ops.init_param(param, init, fan_in)
        self.owner.register_parameter(name, param)
        self.vals[name] = Val(self.g.get_attr(name), w.axes)

    def _box_const(self, box: Box) -> None:
        self.vals[box.outputs[0]] = Val(box.attr("value"), None)

    def _box_size(self, box: Box) -> None:
        self.vals[box.outputs[0]] = Val(self.size(box.attr("axis")), None)

    def _box_index(self, box: Box) -> None:
        axis = box.attr("axis")
        self.store(box, self.call(ops.index, self.size(axis), self.like), (axis,))

    def _box_neg(self, box: Box) -> None:
        x = self.use(box.inputs[0])
        if x.static:
            self.vals[box.outputs[0]] = Val(-x.value, None)
        else:
            self.store(box, self.call(operator.neg, x.value), x.layout)

    def _activation(self, box: Box) -> None:
        fn = getattr(ops, box.op)
        x = self.use(box.inputs[0])
        if x.static:
            self.vals[box.outputs[0]] = Val(fn(x.value), None)
        else:
            self.store(box, self.call(fn, x.value), x.layout)

    def _binary(self, box: Box) -> None:
        a, b = (self.use(u) for u in box.inputs)
        fn = _BINARY[box.op]
        if a.static and b.static:
            self.vals[box.outputs[0]] = Val(fn(a.value, b.value), None)
            return
        if a.layout is None and b.layout is None:
            self.vals[box.outputs[0]] = Val(self.call(fn, a.value, b.value), None)
            return
        layout = self.out_layout(box, a.batched or b.batched)
        if box.op == "div" and self.like is not None and any(
                u.wire in self.float32_wires for u in box.inputs):
            self.store(box, self.call(ops.divide, *self.aligned_pair(a, b, layout),
                                      self.like), layout)
            return
        self.store(box, self.call(fn, *self.aligned_pair(a, b, layout)), layout)

    def aligned_pair(self, a: Val, b: Val, layout: tuple[str, ...]) -> tuple:
        """`a` and `b` aligned to `layout`; an unbatched tensor (a parameter) that meets a
        batched one is expanded over its batch and time axes (`expand_over`)."""
        x, y = self.align(a, layout), self.align(b, layout)
        if a.layout is not None and b.layout is not None and a.batched != b.batched:
            if b.batched:
                x = self.expanded(x, a, y, b.layout, layout)
            else:
                y = self.expanded(y, b, x, a.layout, layout)
        return x, y

    def dynamic(self, axis: str) -> bool:
        """Whether an axis's size is known only at run time (the batch, the sequence)."""
        return axis == BATCH or self.shapes.size(axis) is None

    def expanded(self, node, v: Val, like, like_axes: tuple[str, ...],
                 layout: tuple[str, ...]):
        """`node` (the unbatched `v` aligned to `layout`) expanded, when traced for a
        gradient, over the dynamic axes of `like` (laid out as `layout`) it lacks: its
        gradient is then summed by one opaque op, not by a reduction inductor guards on the
        sequence length (lowering/broadcast.py)."""
        dims = tuple((i, i) for i, a in enumerate(layout)
                     if a not in v.layout and a in like_axes and self.dynamic(a))
        return self.call(expand_over, node, like, dims) if dims else node

    def _box_contract(self, box: Box) -> None:
        vals = [self.use(u) for u in box.inputs]
        tensors = [v for v in vals if v.layout is not None]
        scale = self.scalar_product([v.value for v in vals if v.layout is None])
        if not tensors:
            self.vals[box.outputs[0]] = Val(scale, None)
            return
        layout = self.out_layout(box, any(t.batched for t in tensors))
        float32 = box.outputs[0] in self.float32_wires
        if len(tensors) > 2:
            tensors = self.premultiplied(tensors, float32)
        letters = _letters(tuple(t.layout for t in tensors) + (layout,))
        spec = ",".join("".join(letters[a] for a in t.layout) for t in tensors)
        spec += "->" + "".join(letters[a] for a in layout)
        if len(tensors) == 1 and tensors[0].layout == layout:
            node = tensors[0].value if scale == 1.0 else \
                self.call(operator.mul, tensors[0].value, scale)
        else:
            kwargs = {"scale": scale} if scale != 1.0 else {}
            if float32:
                kwargs["float32"] = True
            expand = self.expand_in_product(tensors, letters, layout) \
                if len(tensors) == 2 else ()
            if expand:
                kwargs["expand"] = expand
            if len(tensors) > 2:  # the sizes known now choose the order (ops.contract)
                kwargs["order"] = ops.pairwise_order(spec, [
                    [None if a == BATCH else self.shapes.size(a) for a in t.layout]
                    for t in tensors])
            node = self.call(ops.contract, spec, *(t.value for t in tensors), **kwargs)
        self.store(box, node, layout)

    def premultiplied(self, tensors: list[Val], float32: bool) -> list[Val]:
        """The operands of a product of three or more, each unbatched one (a parameter) that
        a batched operand holds all the axes of multiplied into that operand first: a product
        of two (`expand_in_product`), its gradient free of size guards, as cheap as any first
        step (an elementwise product the size of the batched operand)."""
        tensors = list(tensors)
        for t in [t for t in tensors if not t.batched]:
            host = next((h for h in tensors if h.batched and set(t.layout) <= set(h.layout)),
                        None)
            if host is None or len(tensors) <= 2:
                continue
            letters = _letters((t.layout, host.layout))
            pair = [t, host]
            spec = (",".join("".join(letters[a] for a in v.layout) for v in pair) + "->"
                    + "".join(letters[a] for a in host.layout))
            kwargs = {"expand": self.expand_in_product(pair, letters, host.layout)}
            if float32:
                kwargs["float32"] = True
            node = self.call(ops.contract, spec, t.value, host.value, **kwargs)
            tensors[tensors.index(host)] = Val(node, host.layout)
            tensors.remove(t)
        return tensors

    def expand_in_product(self, tensors: list[Val], letters: dict,
                          layout: tuple[str, ...]) -> tuple:
        """For a product of an unbatched tensor (a parameter) and a batched one: the
        unbatched one's expansion over the other's dynamic axes (`broadcast.expand_operands`),
        so its gradient is no reduction inductor guards on. Only where the expanded tensor is
        no larger than the other operand or the product (never a weight over time)."""
        expand = []
        for i, (t, other) in enumerate(((tensors[0], tensors[1]), (tensors[1], tensors[0]))):
            if t.batched or not other.batched:
                continue
            missing = [a for a in other.layout if a not in t.layout and self.dynamic(a)]
            ones = [a for a in t.layout if self.shapes.size(a) == 1]  # e.g. a rank-1 weight
            need = set(t.layout) - set(ones) | set(missing)
            host = next((h for h in (other.layout, layout) if need <= set(h)), None)
            if missing and host is not None:
                expand.append((i, "".join(letters[a] for a in host if a in need)
                               + "".join(letters[a] for a in ones if a not in host)))
        return tuple(expand)

    def _box_linear(self, box: Box) -> None:
        x, w = self.use(box.inputs[0]), self.use(box.inputs[1])
        in_axes, out_axes = box.attr("in_axes"), box.attr("out_axes")
        kept = tuple(a for a in x.layout if a not in in_axes)
        layout = kept + out_axes
        w_out = w.layout[len(in_axes):]
        letters = _letters((x.layout, w_out, out_axes))
        fresh = iter(c for c in string.ascii_letters if c not in letters.values())
        out_letters = {a: next(fresh) for a in out_axes}
        spec = ("".join(letters[a] for a in x.layout) + ","
                + "".join(letters[a] for a in w.layout[:len(in_axes)])
                + "".join(out_letters[a] for a in out_axes) + "->"
                + "".join(letters[a] for a in kept) + "".join(out_letters[a] for a in out_axes))
        kwargs = {}
        if x.batched and any(all(self.shapes.size(a) == 1 for a in axes)
                             for axes in (in_axes, out_axes)):
            # a rank-1 projection, which einsum and inductor make a broadcast product and a
            # sum over batch and time: the weight expanded (to the size of x or of the result)
            w_term = spec.split("->")[0].split(",")[1]
            kwargs["expand"] = ((1, "".join(letters[a] for a in kept) + w_term),)
        node = self.call(ops.contract, spec, x.value, w.value, **kwargs)
        if len(box.inputs) > 2:
            b = self.use(box.inputs[2])
            b = Val(b.value, out_axes)
            bias = self.expanded(self.align(b, layout), b, node, layout, layout)
            node = self.call(operator.add, node, bias)
        self.store(box, node, layout)

    def _normaliser(self, box: Box, fn, **kwargs) -> None:
        x = self.use(box.inputs[0])
        dim = x.layout.index(box.attr("along")[0])
        args = [x.value, dim]
        if len(box.inputs) > 1:  # softmax's mask
            args.append(self.align(self.use(box.inputs[1]), x.layout))
        self.store(box, self.call(fn, *args, **kwargs), x.layout)

    def _box_softmax(self, box: Box) -> None:
        self._normaliser(box, ops.softmax)

    def _box_normalise(self, box: Box) -> None:
        self._normaliser(box, ops.normalise, eps=box.attr("eps", 0.0))

    def _box_l2normalise(self, box: Box) -> None:
        self._normaliser(box, ops.l2normalise, eps=box.attr("eps", 1e-6))

    def _norm(self, box: Box, fn, over: tuple[str, ...]) -> None:
        x = self.use(box.inputs[0])
        dims = tuple(x.layout.index(a) for a in over)
        affine = [self.expanded(self.align(a, x.layout), a, x.value, x.layout, x.layout)
                  if x.batched and not a.batched else self.align(a, x.layout)
                  for a in map(self.use, box.inputs[1:])]
        self.store(box, self.call(fn, x.value, dims, box.attr("eps", 1e-5), *affine), x.layout)

    def _box_layernorm(self, box: Box) -> None:
        self._norm(box, ops.layernorm, box.attr("along"))

    def _box_rmsnorm(self, box: Box) -> None:
        self._norm(box, ops.rmsnorm, box.attr("along"))

    def _box_groupnorm(self, box: Box) -> None:
        self._norm(box, ops.layernorm, box.attr("along")[:1])

    def _mask(self, box: Box, fn, **kwargs) -> None:
        q, k = box.attr("along")
        self.store(box, self.call(fn, self.size(q), self.size(k), **kwargs, like=self.like),
                   (q, k))

    def _box_causal(self, box: Box) -> None:
        self._mask(box, ops.causal_mask)

    def _box_window(self, box: Box) -> None:
        self._mask(box, ops.window_mask, size=box.attr("size"))

    def _box_full(self, box: Box) -> None:
        self._mask(box, ops.full_mask)

    def _box_decay(self, box: Box) -> None:
        x = self.use(box.inputs[0])
        q, k = box.attr("along")
        if x.layout is None:
            self._mask(box, ops.scalar_decay, log_gamma=x.value)
            return
        if q in x.layout:  # the key axis after the query axis (the op's contract)
            layout = OPS["decay"].out_axes((x.layout,), (q, k))
            self.store(box, self.call(ops.segment_decay, x.value, x.layout.index(q)), layout)
            return
        lead = 1 if x.batched else 0
        layout = x.layout[:lead] + (q, k) + x.layout[lead:]
        self.store(box, self.call(ops.constant_decay, x.value, self.size(q), self.size(k),
                                  lead), layout)

    def _box_scan(self, box: Box) -> None:
        self.store(box, self.call(ops.scan, *self.scan_args(box)),
                   self.out_layout(box, self.scan_batched(box)))

    def scan_batched(self, box: Box) -> bool:
        return any(self.use(u, current=True).batched for u in box.inputs)

    def scan_args(self, box: Box) -> tuple:
        """A scan's u and log-decays laid out like its output, and the time dim."""
        layout = self.out_layout(box, self.scan_batched(box))
        u, log_a = (self.use(x, current=True) for x in box.inputs)
        la = log_a.value if log_a.layout is None else self.align(log_a, layout)
        return self.align(u, layout), la, layout.index(box.attr("along")[0])

    def _box_ssd(self, box: Box) -> None:
        from .forms import lower_ssd
        lower_ssd(self, box)

    def _box_delta_rule(self, box: Box) -> None:
        from .forms import lower_delta_rule
        lower_delta_rule(self, box)

    def _box_ssd_bonus(self, box: Box) -> None:
        from .forms import lower_ssd_bonus
        lower_ssd_bonus(self, box)

    def _box_attention(self, box: Box) -> None:
        from .attention import lower_attention
        lower_attention(self, box)

    def _box_shift(self, box: Box) -> None:
        x = self.use(box.inputs[0])
        dim = x.layout.index(box.attr("along")[0])
        self.store(box, self.call(ops.shift, x.value, dim, box.attr("by", 1)), x.layout)

    def _box_flip(self, box: Box) -> None:
        x = self.use(box.inputs[0])
        self.store(box, self.call(ops.flip, x.value, x.layout.index(box.attr("along")[0])),
                   x.layout)

    def _rotary(self, box: Box, fn, **kwargs) -> None:
        x = self.use(box.inputs[0])
        t, n = box.attr("along")
        self.store(box, self.call(fn, x.value, x.layout.index(t), x.layout.index(n), **kwargs),
                   x.layout)

    def _box_rope(self, box: Box) -> None:
        self._rotary(box, ops.rope, base=box.attr("base", 10000.0))

    def _box_xpos(self, box: Box) -> None:
        self._rotary(box, ops.xpos, base=box.attr("base", 10000.0),
                     scale_base=box.attr("scale_base", 512.0),
                     downscale=box.attr("downscale", False))

    def _box_share(self, box: Box) -> None:
        x = self.use(box.inputs[0])
        g, h = box.attr("along")
        layout = OPS["share"].out_axes((x.layout,), (g, h))
        self.store(box, self.call(ops.share, x.value, x.layout.index(g), self.size(h)), layout)

    def _box_concat(self, box: Box) -> None:
        parts = [self.use(u) for u in box.inputs]
        axis = box.attr("axis")
        layout = self.out_layout(box, any(p.batched for p in parts))
        aligned = []
        for p, own in zip(parts, box.attr("parts")):
            renamed = Val(p.value, tuple(axis if a == own else a for a in p.layout))
            aligned.append(self.align(renamed, layout))
        self.store(box, self.call(ops.concat, layout.index(axis), *aligned), layout)

    def _box_split(self, box: Box) -> None:
        x = self.use(box.inputs[0])
        axis = box.attr("axis")
        dim = x.layout.index(axis)
        sizes = tuple(self.size(a) for a in box.attr("parts"))
        node = self.call(ops.split, x.value, dim, sizes)
        for i, (wire, part) in enumerate(zip(box.outputs, box.attr("parts"))):
            piece = self.call(operator.getitem, node, i)
            layout = tuple(part if a == axis else a for a in x.layout)
            self.store(box, piece, layout, wire=wire)

    def _box_reshape(self, box: Box) -> None:
        x = self.use(box.inputs[0])
        merge, into = box.attr("merge"), box.attr("into")
        kept = tuple(a for a in x.layout if a not in merge)
        node = self.align(x, kept + merge)  # the merged axes last, in their row-major order
        sizes = tuple(self.size(a) for a in into)
        self.store(box, self.call(ops.reshape, node, len(kept), sizes), kept + into)

    def _box_call(self, box: Box) -> None:
        from .module import compile_diagram
        callee = self.d.program.anatomies[box.attr("anatomy")]
        sub = compile_diagram(callee, self.shapes.callees[box.id], form=self.form)
        self.owner.add_module(box.id, sub)
        node = self.g.call_module(box.id, tuple(self.call_args(box)))
        self.store_call_outputs(box, node)

    def call_args(self, box: Box, current: bool = False) -> list:
        """A composite box's inputs laid out as its callee's ports: [batch, port axes]."""
        args = []
        for u in box.inputs:
            v = self.use(u, current=current)
            if not v.batched:  # e.g. a parameter passed in: the same for every sequence
                v = Val(self.align(v, u.axes), u.axes)
                args.append(self.call(ops.batch_like, v.value, self.like))
            else:
                args.append(self.align(v, (BATCH,) + u.axes))
        return args

    def store_call_outputs(self, box: Box, node) -> None:
        """A composite box's outputs: one tensor, or a tuple of them, each [batch, axes]."""
        if len(box.outputs) == 1:
            self.vals[box.outputs[0]] = Val(node, (BATCH,) + self.d.wires[box.outputs[0]].axes)
            return
        for i, wire in enumerate(box.outputs):
            piece = self.call(operator.getitem, node, i)
            self.vals[wire] = Val(piece, (BATCH,) + self.d.wires[wire].axes)

    def _box_slot(self, box: Box) -> None:
        raise AnatError(f"slot {box.attr('slot')} is not filled: compile a filled variant",
                        box.loc, hint="fill the slot with an anatomy that `fills` it")


def _letters(layouts) -> dict[str, str]:
    letters: dict[str, str] = {}
    pool = iter(string.ascii_letters)
    for layout in layouts:
        for a in layout:
            if a not in letters:
                letters[a] = next(pool)
    return letters
