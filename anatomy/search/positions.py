"""Positional information for the search's model: none, learned absolute positions, or rotary.

- `none`: the model sees token identities only; a causal mixer still knows order implicitly.
- `learned`: a learned embedding per position, added to the token embedding (as GPT-2, and
  Zoology's attention baseline: `max_position_embeddings = input_seq_len`). It is part of
  the model (anatomy.search.model.LanguageModel), so it works with any template.
- `rope`: rotary encoding (Su et al., "RoFormer", 2021) of the queries and keys of every
  block: the two inputs of the template's `similarity` slot (after the feature map) are
  rotated along their first (time) axis and last (feature) axis, so the score of a query
  and a key depends on their offset. It needs a template with a `similarity` slot, such as
  zoo/search/attention.anat; `with_positions` refuses others.
"""

from __future__ import annotations

from anatomy.errors import AnatError
from anatomy.ir import Box, Diagram, Use, Wire, freeze_attrs
from anatomy.shapes import checked

POSITIONS = ("none", "learned", "rope")
ROPE_SLOT = "similarity"


def with_positions(variant: Diagram, positions: str) -> Diagram:
    """`variant` (a filled template) with rotary positions added when `positions` is
    `rope`; unchanged otherwise (learned positions live in the model, not the mixer)."""
    if positions not in POSITIONS:
        raise AnatError(f"unknown positions `{positions}`", hint=f"use one of {POSITIONS}")
    if positions != "rope":
        return variant
    program = variant.program
    targets = [b for b in variant.boxes if b.op == "call"
               and program[b.attr("anatomy")].fills == ROPE_SLOT]
    if not targets:
        raise AnatError(f"--positions rope rotates the queries and keys of a `{ROPE_SLOT}` "
                        f"slot, and {variant.name} has none",
                        variant.loc, hint="use --positions learned (any template)")
    wires, boxes, roped = dict(variant.wires), [], {}
    for b in variant.boxes:
        if b in targets:
            uses = []
            for u in b.inputs:
                if u.wire not in roped:
                    w = variant.wires.get(u.wire)
                    axes = w.axes if w is not None else u.axes
                    if len(axes) < 2:
                        raise AnatError(f"--positions rope needs a time and a feature axis on "
                                        f"`{u.wire}`", b.loc)
                    name = _fresh(f"{u.wire}_rope", wires)
                    wires[name] = Wire(name, axes)
                    boxes.append(Box("rope", (Use(u.wire, axes),), (name,),
                                     freeze_attrs({"along": [axes[0], axes[-1]]}), b.loc))
                    roped[u.wire] = name
                uses.append(Use(roped[u.wire], u.axes))
            b = Box(b.op, tuple(uses), b.outputs, b.attrs, b.loc)
        boxes.append(b)
    return checked(variant.replace(wires=wires, boxes=boxes),
                   dict(variant.shapes.dims) if variant.shapes else {})


def _fresh(name: str, taken: dict) -> str:
    n, candidate = 1, name
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate
