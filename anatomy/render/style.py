"""How boxes look: one component kind per box, one colour per kind, and the legend.

`anatomy.ops.kind_of` gives an op's kind; a `contract` box is refined here by what it
sums, since the same Einstein product is a similarity (`q * k[s]` summed over features,
keeping both sequence axes), a mixing (summing over a sequence axis: weights times values)
or a plain product (summing nothing).
"""

from __future__ import annotations

from html import escape

from ..ir import Box
from ..ops import KINDS, kind_of

FONT = "Helvetica"

# Fill colours (pastel, so black text stays readable); keys are anatomy.ops.KINDS.
COLOURS = {
    "input": "#ffffff",
    "parameter": "#fff3bf",
    "projection": "#a5d8ff",
    "similarity": "#ffc9c9",
    "mask": "#d0bfff",
    "normaliser": "#ffd8a8",
    "mixing": "#b2f2bb",
    "gate": "#fcc2d7",
    "norm": "#96f2d7",
    "activation": "#e9ecef",
    "position": "#eebefa",
    "structure": "#f1f3f5",
    "sharing": "#ffec99",
    "arithmetic": "#ffffff",
    "composite": "#dbe4ff",
    "slot": "#ffffff",
}

# Legend names where the kind's key is terse.
LEGEND_NAMES = {"input": "input / output", "mask": "mask / decay",
                "arithmetic": "arithmetic / product", "composite": "composite (anatomy)"}

HIGHLIGHT = "#e03131"


def box_kind(box: Box, out_axes: tuple[str, ...], sequence_axes: set[str]) -> str:
    """The component kind of a box with output axes `out_axes`; `sequence_axes` are the
    axes sized like time (t and its key copies such as s)."""
    if box.op != "contract":
        return kind_of(box.op)
    summed = {a for u in box.inputs for a in u.axes} - set(out_axes)
    if summed & sequence_axes:
        return "mixing"
    if summed and len(set(out_axes) & sequence_axes) >= 2:
        return "similarity"
    return "arithmetic"


def legend(kinds: set[str]) -> str:
    """An HTML-like graphviz label: a colour swatch and a name per kind drawn, four to a
    row, in the order of KINDS."""
    order = [k for k in KINDS if k in kinds]
    rows = [order[i:i + 4] for i in range(0, len(order), 4)]
    cells = "".join(
        "<TR>" + "".join(f'<TD BGCOLOR="{COLOURS[k]}" BORDER="1" COLOR="#868e96" WIDTH="14" '
                         f'HEIGHT="12" FIXEDSIZE="TRUE"></TD>'
                         f'<TD ALIGN="LEFT">{escape(LEGEND_NAMES.get(k, k))}</TD>'
                         for k in row) + "</TR>"
        for row in rows)
    return (f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="3" CELLPADDING="1">'
            f'{cells}</TABLE>')
