"""The recurrent (step) form: run a diagram over a chunk of new tokens given a state.

`module.step(*inputs, state) -> (outputs, state)` takes inputs laid out [batch, chunk, ...]
for any chunk length (one token when decoding, many when prefilling), so prefill then
decode equals the parallel form on the whole sequence. The state holds:
- `pos`: how many tokens came before;
- one SSM state [B, H, N, P] per `ssd`, `ssd_bonus` or `delta_rule` box (masked linear
  attention, rewritten into that box by the rewrite engine's lowering rules; flat cost per
  token), and the last state of each `scan` (a recurrence written as such);
- a cache of history for each wire read on the key axis (a KV cache for softmax attention;
  in the auto form an `attention` box's window bounds it);
- the last steps before the chunk for each `shift` along time (a shift along the key axis
  needs none: a step sees the whole history there).
Anatomies whose outputs may look ahead along time (an unmasked sum or softmax over the key
axis, flip, norms over time, the sequence length as a number) have no recurrent form:
`anatomy.causality` decides that from the diagram before anything is built, and `step`
raises AnatError naming the box.
"""

from __future__ import annotations

import operator

from torch import fx

from anatomy.errors import AnatError
from anatomy.ir import Box, Use
from anatomy.ops import OPS

from . import torch_ops as ops
from .attention import lower_attention
from .forms import lower_delta_rule, lower_ssd, lower_ssd_bonus, state_shape
from .graph import BATCH, GraphBuilder, Val
from .softmax_bias import cumulative_log_decay, keep_last


class StepBuilder(GraphBuilder):
    """Lowers a diagram's step form; parameters are read from the already built module."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.t = self.d.time_axis
        self.state_in: fx.Node | None = None
        self.state_out: dict[str, fx.Node] = {}
        self.state_specs: dict[str, tuple] = {}
        self.history: dict[str, Val] = {}
        self.offset = None

    # -- time axes ------------------------------------------------------------------------
    def is_time(self, axis: str) -> bool:
        return self.t is not None and self.shapes.sizes.find(axis) == \
            self.shapes.sizes.find(self.t)

    def is_key(self, axis: str) -> bool:
        return axis != self.t and self.is_time(axis)

    def check_step_lowering(self, box: Box) -> None:
        """A recurrence along time (its op contract says so) carries state from chunk to
        chunk: without a step lowering of its own here, its parallel lowering would restart
        at every chunk, so the step form is refused."""
        spec = OPS.get(box.op)
        if spec is not None and spec.causal == "recurrence" \
                and f"_box_{box.op}" not in StepBuilder.__dict__ \
                and self.is_time(box.attr("along")[0]):
            self.refuse(box, "is a recurrence along time with no step lowering "
                             "(lowering/recurrent.py)")

    def refuse(self, box: Box, why: str) -> None:
        raise AnatError(f"{self.d.name} has no recurrent form: {box.op} {why}", box.loc,
                        hint="use the parallel or chunked form for this anatomy")

    # -- entry ----------------------------------------------------------------------------
    def build(self) -> fx.Graph:
        if self.t is None:
            raise AnatError(f"{self.d.name} has no time axis, so no recurrent form")
        for p in self.d.inputs:
            node = self.g.placeholder(p.name)
            self.vals[p.name] = Val(node, (BATCH,) + p.axes)
            if self.like is None:
                self.like = node
        self.state_in = self.g.placeholder("state")
        self.offset = self.call(ops.state_entry, self.state_in, "pos", name="pos")
        for box in self.d.boxes:
            self.check_step_lowering(box)
            self.lower(box)
        outs = [self.batched_output(self.vals[p.name]) for p in self.d.outputs]
        chunk = self.size(self.t)
        new_pos = self.call(operator.add, self.offset, chunk, name="new_pos")
        keys = ("pos",) + tuple(self.state_out)
        state = self.call(ops.make_state, keys, new_pos, *self.state_out.values(),
                          name="new_state")
        result = outs[0] if len(outs) == 1 else tuple(outs)
        self.g.output((result, state))
        self.g.lint()
        return self.g

    # -- overrides ------------------------------------------------------------------------
    def size(self, axis: str):
        if self.t is not None and self.is_key(axis):
            chunk = super().size(self.t)
            return self.call(operator.add, self.offset, chunk, name=f"size_{axis}")
        return super().size(axis)

    def use(self, u: Use, current: bool = False) -> Val:
        v = super().use(u)
        wire_axes = self.d.wires[u.wire].axes
        keyed = [i for i, (a, b) in enumerate(zip(wire_axes, u.axes))
                 if a == self.t and self.is_key(b)]
        if current or not keyed:
            return v
        return self.key_history(u.wire, u.axes)

    def key_history(self, wire: str, axes: tuple[str, ...]) -> Val:
        """The wire's values at every position so far (from a cache carried in the state),
        seen through the axis names `axes`."""
        if wire not in self.history:
            layout = self.vals[wire].layout
            dim = layout.index(self.t)
            cache = self.call(ops.state_entry, self.state_in, f"cache:{wire}")
            full = self.call(ops.append, cache, self.vals[wire].value, dim, name=f"{wire}_all")
            self.state_out[f"cache:{wire}"] = full
            self.state_specs[f"cache:{wire}"] = ("cache", layout, dim)
            self.history[wire] = Val(full, layout)
        rename = dict(zip(self.d.wires[wire].axes, axes))
        layout = self.history[wire].layout
        return Val(self.history[wire].value,
                   tuple(rename.get(a, a) if a != BATCH else a for a in layout))

    def _box_param(self, box: Box) -> None:
        name = box.outputs[0]
        self.vals[name] = Val(self.g.get_attr(name), self.d.wires[name].axes)

    def _mask(self, box: Box, fn, **kwargs) -> None:
        q, k = box.attr("along")
        self.store(box, self.call(fn, self.size(q), self.size(k), **kwargs, like=self.like,
                                  offset=self.offset), (q, k))

    def _box_decay(self, box: Box) -> None:
        q, k = box.attr("along")
        x = super().use(box.inputs[0])
        if x.layout is None:
            self._mask(box, ops.scalar_decay, log_gamma=x.value)
            return
        if q in x.layout:  # the log-decays of every position so far, then our rows
            full = self.key_history(box.inputs[0].wire, box.inputs[0].axes)
            dim = full.layout.index(q)
            layout = full.layout[:dim + 1] + (k,) + full.layout[dim + 1:]
            node = self.call(ops.segment_decay, full.value, dim, rows=self.size(self.t))
            self.store(box, node, layout)
            return
        lead = 1 if x.batched else 0
        layout = x.layout[:lead] + (q, k) + x.layout[lead:]
        self.store(box, self.call(ops.constant_decay, x.value, self.size(q), self.size(k),
                                  lead, offset=self.offset), layout)

    def _rotary(self, box: Box, fn, **kwargs) -> None:
        if self.is_time(box.attr("along")[0]):
            kwargs["offset"] = self.offset
        super()._rotary(box, fn, **kwargs)

    def _box_index(self, box: Box) -> None:
        axis = box.attr("axis")
        if self.is_time(axis) and not self.is_key(axis):  # this chunk's query positions
            node = self.call(ops.index, self.size(axis), self.like, offset=self.offset)
            self.store(box, node, (axis,))
            return
        super()._box_index(box)  # the key axis: every position so far, 0 .. pos + chunk - 1

    # -- fused softmax attention: a KV cache, the keys' cumulative log-decays, windows ------
    def _box_attention(self, box: Box) -> None:
        end = self.call(operator.add, self.offset, self.size(self.t))
        lower_attention(self, box, end=end)
        window = box.attr("window", 0)
        if not window:
            return
        # a sliding window: keep only the last window - 1 keys of the histories it reads,
        # when it alone reads them (all or none: keys, values and leaves stay aligned)
        keys = {f"cache:{u.wire}": u.wire for u in box.inputs if f"cache:{u.wire}" in
                self.state_out and any(self.is_key(a) for a in u.axes)}
        if not all(self.read_on_key_axis_only_by(w, {box.id}) for w in keys.values()):
            return
        for key in keys:
            dim = self.state_specs[key][2]
            self.state_out[key] = self.call(keep_last, self.state_out[key], dim, window - 1)

    def read_on_key_axis_only_by(self, wire: str, boxes: set) -> bool:
        wire_axes = self.d.wires[wire].axes
        for b in self.d.boxes:
            reads = any(u.wire == wire and any(a == self.t and self.is_key(x)
                                               for a, x in zip(wire_axes, u.axes))
                        for u in b.inputs)
            if reads and b.id not in boxes:
                return False
        return True

    def cumulative_log_decay(self, log_a, window: int | None = None):
        """The keys' cumulative log-decays carried in the state (`cumdecay:`), continued by
        this chunk's; a window keeps the last window - 1."""
        key = f"cumdecay:{len([k for k in self.state_out if k.startswith('cumdecay:')])}"
        history = self.call(ops.state_entry, self.state_in, key)
        full = self.call(cumulative_log_decay, log_a, history)
        self.state_out[key] = full if window is None else \
            self.call(keep_last, full, -1, window - 1)
        self.state_specs[key] = ("cumdecay",)
        return full

    def _box_shift(self, box: Box) -> None:
        axis = box.attr("along")[0]
        if not self.is_time(axis) or self.is_key(axis):
            # along the key axis a step sees every position so far: a plain shift
            return super()._box_shift(box)
        x = self.use(box.inputs[0], current=True)
        dim = x.layout.index(axis)
        key = f"shift:{box.outputs[0]}"
        prev = self.call(ops.state_entry, self.state_in, key)
        both = self.call(ops.shift_step, x.value, dim, prev, box.attr("by", 1))
        self.state_out[key] = self.call(operator.getitem, both, 1)
        self.state_specs[key] = ("shift", x.layout, dim, box.attr("by", 1))
        self.store(box, self.call(operator.getitem, both, 0), x.layout)

    def _box_call(self, box: Box) -> None:
        args = self.call_args(box, current=True)
        key = f"call:{box.id}"
        sub_state = self.call(ops.state_entry, self.state_in, key)
        module = self.g.get_attr(box.id)
        result = self.g.call_method("step", (module, *args, sub_state))
        out = self.call(operator.getitem, result, 0)
        self.state_out[key] = self.call(operator.getitem, result, 1)
        self.state_specs[key] = ("call", box.id)
        self.store_call_outputs(box, out)

    # -- the recurrences: an SSM state per ssd box, the last S of a scan ---------------------
    def _box_ssd(self, box: Box) -> None:
        key = f"ssm:{box.outputs[0]}"
        initial = self.call(ops.state_entry, self.state_in, key)
        self.state_out[key] = lower_ssd(self, box, initial_state=initial)
        self.state_specs[key] = ("ssm", state_shape(self, box))

    def _box_ssd_bonus(self, box: Box) -> None:
        key = f"ssm:{box.outputs[0]}"
        initial = self.call(ops.state_entry, self.state_in, key)
        self.state_out[key] = lower_ssd_bonus(self, box, initial_state=initial)
        self.state_specs[key] = ("ssm", state_shape(self, box))

    def _box_delta_rule(self, box: Box) -> None:
        key = f"ssm:{box.outputs[0]}"
        initial = self.call(ops.state_entry, self.state_in, key)
        self.state_out[key] = lower_delta_rule(self, box, initial_state=initial)
        self.state_specs[key] = ("ssm", state_shape(self, box))

    def _box_scan(self, box: Box) -> None:
        key = f"scan:{box.outputs[0]}"
        initial = self.call(ops.state_entry, self.state_in, key)
        both = self.call(ops.scan, *self.scan_args(box), initial, True)
        self.state_out[key] = self.call(operator.getitem, both, 1)
        self.state_specs[key] = ("scan", self.scan_batched(box))  # batched: rows split
        self.store(box, self.call(operator.getitem, both, 0),
                   self.out_layout(box, self.scan_batched(box)))
