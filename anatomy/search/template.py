"""Templates: diagrams with slot boxes, and their instantiation with fillers.

A template is an anatomy that uses `slot NAME(args)` boxes (docs/language.md section 20).
Instantiating it replaces every slot box by a call box to the anatomy chosen for that slot
(the same filler wherever a slot is used twice) and re-checks the shapes: the checker, not
the search, decides whether a combination is type-correct.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from anatomy.errors import AnatError
from anatomy.ir import Box, Diagram, Program, freeze_attrs
from anatomy.shapes import check_fill, checked


def slots_of(template: Diagram) -> list[str]:
    """The slots a template uses, in order of first use."""
    seen: list[str] = []
    for b in template.boxes:
        if b.op == "slot" and b.attr("slot") not in seen:
            seen.append(b.attr("slot"))
    return seen


def instantiate(template: Diagram, choice: Mapping[str, str],
                dims: Mapping[str, int] | None = None) -> Diagram:
    """The template with each slot box replaced by a call of `choice[slot]`, checked at
    `dims` (the template's defaults otherwise). Raises AnatError if a slot has no choice, a
    choice does not fill its slot, or the filled diagram does not type-check."""
    missing = [s for s in slots_of(template) if s not in choice]
    if missing:
        raise AnatError(f"{template.name}: no filler chosen for slot `{missing[0]}`",
                        template.loc, hint=f"its slots are {', '.join(slots_of(template))}")
    return fill(template, choice, dims)


def fill(diagram: Diagram, choice: Mapping[str, str],
         dims: Mapping[str, int] | None = None) -> Diagram:
    """`diagram` with the slot boxes of the slots in `choice` replaced by call boxes (others
    stay open), checked at `dims` (default: the dims `diagram` was checked at)."""
    program: Program = diagram.program
    boxes: list[Box] = []
    for b in diagram.boxes:
        slot = b.attr("slot") if b.op == "slot" else None
        if slot is None or slot not in choice:
            boxes.append(b)
            continue
        filler = program[choice[slot]]
        if filler.fills != slot:
            raise AnatError(f"{filler.name} does not fill slot `{slot}`", b.loc,
                            hint=f"its header must say `fills {slot}`")
        attrs = {k: v for k, v in b.attrs if k != "slot"}
        attrs["anatomy"] = filler.name
        attrs["dims"] = loaded_dims(filler) or None
        boxes.append(Box("call", b.inputs, b.outputs, freeze_attrs(attrs), b.loc))
    if dims is None and diagram.shapes is not None:
        dims = diagram.shapes.dims
    return checked(diagram.replace(boxes=boxes), dict(dims or {}))


def loaded_dims(filler: Diagram) -> tuple[tuple[str, int], ...]:
    """The filler's own plain dims (`dims g = 2`, not bound to a port axis, not derived) at
    the sizes it was loaded with: a call box carries them, so that `--dims g=4` given when
    loading a space reaches the fillers (a call otherwise checks its callee at defaults)."""
    if filler.shapes is None:
        return ()
    ports = {a for p in filler.inputs + filler.outputs for a in p.axes}
    return tuple(sorted((name, filler.shapes.dims[name]) for name, dim in filler.dims.items()
                        if name not in ports and dim.expr is not None and dim.expr.op == "num"
                        and name in filler.shapes.dims))


def with_anatomy(program: Program, diagram: Diagram, name: str, fills: str) -> Program:
    """A copy of `program` that also holds `diagram` as anatomy `name` filling `fills`
    (checked against the slot's interface): how a built variant becomes a filler of
    another template, e.g. the mixer of a block."""
    if name in program.anatomies:
        raise AnatError(f"{program.file} already has an anatomy named `{name}`")
    filler = dataclasses.replace(diagram, name=name, fills=fills)
    # the program's own anatomies are rebound to the copy when it is made (Program)
    merged = Program({**program.anatomies, name: filler}, dict(program.slots), program.file,
                     dict(program.slot_locs), program.own)
    if filler.program is program:
        filler = merged.anatomies[name] = dataclasses.replace(filler, program=merged)
    check_fill(merged, filler)
    return merged
