"""One contract per op (issue 21): the op table's specs give every box's output axes and
checks, and the IR is frozen.

The references here are the parsed zoo itself (every box the loader built has the axes its
op's contract gives) and hand-written axes from the definitions in docs/language.md."""

from __future__ import annotations

import dataclasses

import pytest

import anatomy
from anatomy.errors import AnatError, SourceLoc
from anatomy.ir import time_axis_of
from anatomy.ops import OPS, usage_of


def _zoo_boxes():
    for stem, program in anatomy.zoo().items():
        for d in program:
            for b in d.boxes:
                if b.op in OPS and b.op != "split":
                    yield stem, d, b


def test_every_zoo_box_has_the_axes_its_contract_gives():
    seen = set()
    for stem, d, b in _zoo_boxes():
        spec = OPS[b.op]
        out = d.wires[b.outputs[0]].axes
        ins = tuple(u.axes for u in b.inputs)
        got = spec.out_axes(ins, b.attr("along") or (), dict(b.attrs), expected=out)
        # a nested box keeps its own order; a statement may name the same axes in another
        assert (got == out) if spec.needs_target else (set(got) == set(out)), \
            (stem, d.name, b.op, got, out)
        seen.add(b.op)
    assert {"decay", "ssd", "delta_rule", "softmax", "share", "linear"} <= seen


@pytest.mark.parametrize("ins, along, want", [
    ((("t", "h"),), ("t", "s"), ("t", "s", "h")),       # the key axis after the query axis
    ((("h", "t", "n"),), ("t", "s"), ("h", "t", "s", "n")),  # per channel (GLA)
    (((),), ("t", "s"), ("t", "s")),                      # a constant log-decay (retention)
    ((("h",),), ("t", "s"), ("t", "s", "h")),
])
def test_decay_axes(ins, along, want):
    assert OPS["decay"].out_axes(ins, along) == want


def test_contract_errors_are_located_with_the_usage():
    loc = SourceLoc("f.anat", 3, 7, "  m[t, s] = decay(la[s], t, s)")
    with pytest.raises(AnatError) as e:
        OPS["decay"].out_axes((("s",),), ("t", "s"), loc=loc)
    assert e.value.loc == loc and "key axis" in e.value.message
    assert e.value.hint == usage_of(OPS["decay"])
    with pytest.raises(AnatError, match="takes its axes from its target"):
        OPS["delta_rule"].out_axes((("t", "n"),) * 2 + ((("t", "p")),) + (("t",), ()), ("t",))


def test_delta_rule_contract():
    q = k = ("t", "h", "n")
    spec = OPS["delta_rule"]
    out = ("t", "h", "p")
    assert spec.out_axes((q, k, ("t", "h", "p"), ("t", "h"), ("t", "h", "n")), ("t",),
                         expected=out) == out
    with pytest.raises(AnatError, match="beta has axis n"):
        spec.out_axes((q, k, ("t", "h", "p"), ("t", "h", "n"), ()), ("t",), expected=out)


def test_one_time_axis():
    p = anatomy.load("""
anatomy f(temperature[], x[t, d]) -> y[t, d]
  dims d = 4
  y[t, d] = x * temperature
""")
    d = p["f"]
    assert d.time_axis == time_axis_of(d.signature) == "t"


def test_diagrams_are_frozen_with_program_and_shapes_given():
    p = anatomy.load("mha")
    d = next(iter(p))
    assert d.program is p and d.shapes is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.shapes = None
    again = d.replace(doc="x")
    assert again.shapes is None and again.program is p and again.doc == "x"


def test_a_new_op_needs_only_its_spec_and_its_lowering(monkeypatch):
    """Issue 21's claim, exercised: an op added to the table (its contract) and given a torch
    lowering is parsed, checked, printed and re-parsed, judged causal, titled in pictures and
    compiled, with no other file knowing it. The reference is torch.cumsum itself."""
    import torch
    from anatomy.lowering import compile as compile_anatomy
    from anatomy.lowering.graph import GraphBuilder

    from anatomy.causality import acausal_reason
    from anatomy.ops import OpSpec
    from anatomy.render.labels import box_title

    def infer(c):
        c.need(c.along[0], 0, "sums along")
        return c.ins[0]

    spec = OpSpec("runsum", "mixing", "running sum along an axis: y_t = sum_{s<=t} x_s",
                  axes=("axis",), infer=infer, causal="recurrence", passes_target=True,
                  title=lambda along, attrs: f"running sum over {along[0]}")

    def lower(self, box):
        x = self.use(box.inputs[0])
        dim = x.layout.index(box.attr("along")[0])
        self.store(box, self.call(torch.cumsum, x.value, dim), x.layout)

    monkeypatch.setitem(OPS, "runsum", spec)
    monkeypatch.setattr(GraphBuilder, "_box_runsum", lower, raising=False)
    text = """
anatomy f(x[t, d]) -> y[t, d]
  dims d = 4
  y[t, d] = runsum(exp(x), t) * 2
"""
    d = anatomy.load(text)["f"]
    again = anatomy.load(d.to_text())["f"]
    assert again.structure() == d.structure()
    assert acausal_reason(d, d.shapes) is None
    box = next(b for b in d.boxes if b.op == "runsum")
    assert box_title(d, box) == "running sum over t"
    with pytest.raises(AnatError, match="runsum sums along `s`"):
        anatomy.load(text.replace("runsum(exp(x), t)", "runsum(exp(x), s)"))
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    y = compile_anatomy(text, form="parallel").double()(x)
    want = torch.cumsum(torch.exp(x), dim=1) * 2
    assert torch.allclose(y, want, rtol=1e-12, atol=0)  # max relative error <= 1e-12
    # without a step lowering of its own, a recurrence has no step form: refused, not wrong
    with pytest.raises(AnatError, match="no step lowering"):
        compile_anatomy(text).init_state(2)  # builds the step form
