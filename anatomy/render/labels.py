"""The text of the picture: box titles, wire shapes, and the scalar sub-expressions
(`1 / sqrt(n)`) and implicit parameters (`w_q` of a `linear`) folded into the box that
uses them."""

from __future__ import annotations

from html import escape

from ..ir import Box, Diagram
from ..ops import OPS
from ..printer import expression
from ..shapes import Shapes

_SYMBOLS = {"add": "+", "sub": "−", "div": "÷", "pow": "^", "contract": "×"}


def shape_text(shapes: Shapes, axes: tuple[str, ...], seen_as: tuple[str, ...] | None = None,
               ) -> str:
    """`[t, h=8, n=64]`; axes renamed at a use read `t→s`."""
    parts = []
    for i, a in enumerate(axes):
        size = shapes.size(a)
        name = a if seen_as is None or seen_as[i] == a else f"{a}→{seen_as[i]}"
        parts.append(name if size is None else f"{name}={size}")
    return f"[{', '.join(parts)}]"


def wire_text(shapes: Shapes, name: str, use_axes: tuple[str, ...] | None = None) -> str:
    """A wire as `q[t, h=8, n=64]`, or `k[t→s, n=64]` where a use renames its axes."""
    wire = shapes.diagram.wires[name]
    return ("" if wire.anonymous else name) + shape_text(shapes, wire.axes, use_axes)


def folded_constant(d: Diagram, wire: str) -> bool:
    """An anonymous scalar computed from numbers and sizes only, used once: drawn as text
    in its consumer (`× 1 / sqrt(n)`) rather than as boxes of its own."""
    w, box, users = d.wires[wire], d.producer(wire), d.consumers(wire)
    return (w.anonymous and not w.axes and box is not None and len(users) == 1
            and box.op not in ("param", "call", "slot") and users[0].op not in ("call", "slot")
            and all(folded_constant(d, u.wire) for u in box.inputs))


def folded_param(d: Diagram, wire: str) -> bool:
    """A parameter a box made for itself (`linear`'s weight, a norm's scale)."""
    box = d.producer(wire)
    return (box is not None and box.op == "param" and bool(box.attr("implicit"))
            and len(d.consumers(wire)) == 1)


def box_title(d: Diagram, box: Box) -> str:
    """What a box does, in a few characters: `softmax over s`, `Σ n`, `share g→h`."""
    op, along = box.op, box.attr("along") or ()
    if op == "contract":
        summed = [a for u in box.inputs for a in u.axes
                  if a not in d.wires[box.outputs[0]].axes]
        title = f"Σ {', '.join(dict.fromkeys(summed))}" if summed else "×"
    elif op in _SYMBOLS or op == "neg":
        title = "−" if op == "neg" else _SYMBOLS[op]
    elif op == "const":
        title = str(box.attr("value"))
    elif op == "call":
        title = box.attr("anatomy")
    elif op == "slot":
        title = f"slot {box.attr('slot')}"
    elif op in OPS:
        title = OPS[op].picture_title(along, dict(box.attrs))
    elif box.attr("axis"):
        title = f"{op} {box.attr('axis')}"
    else:
        title = op
    constants = [expression(d, u.wire) for u in box.inputs if folded_constant(d, u.wire)]
    if constants and op in _SYMBOLS:
        title = f"{title} {_SYMBOLS[op]} {' '.join(constants)}" if op == "contract" else \
            _infix(d, box, _SYMBOLS[op])
    elif constants:
        title = f"{title} ({', '.join(constants)})"
    return title


def _infix(d: Diagram, box: Box, symbol: str) -> str:
    """`· + 1`, `1 − ·`: a binary operator with its folded constant operand in place."""
    return f" {symbol} ".join(expression(d, u.wire) if folded_constant(d, u.wire) else "·"
                              for u in box.inputs)


def node_label(title: str, notes: list[str] = (), bold: bool = False) -> str:
    """An HTML-like graphviz label: the title, then smaller grey notes (parameters)."""
    text = escape(title)
    rows = [f"<TR><TD>{'<B>' + text + '</B>' if bold else text}</TD></TR>"]
    rows += [f'<TR><TD><FONT POINT-SIZE="9" COLOR="#495057">{escape(n)}</FONT></TD></TR>'
             for n in notes]
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
            + "".join(rows) + "</TABLE>>")
