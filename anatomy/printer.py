"""IR to .anat text. Printing then parsing gives back an identical diagram (`structure()`),
so rewritten diagrams can always be shown as text.

Anonymous wires used once are inlined back into expressions; everything else is a statement.
"""

from __future__ import annotations

from .errors import AnatError
from .ir import Box, Diagram, Program, Use, implicit_param_name
from .ops import OPS, OpSpec, keeps_axes

_PREC = {"add": 1, "sub": 1, "contract": 2, "div": 2, "neg": 3, "pow": 4}
_SYMBOL = {"add": "+", "sub": "-", "div": "/", "pow": "**"}


def _union(*axes_lists) -> tuple[str, ...]:
    out: list[str] = []
    for axes in axes_lists:
        out.extend(a for a in axes if a not in out)
    return tuple(out)


def _num(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return f"{v:.1f}"
    return repr(v)


class _Printer:
    def __init__(self, d: Diagram):
        self.d = d
        self.outputs = {p.name for p in d.outputs}
        self.implicit_count: dict[str, int] = {}
        self.stem = d.name

    # which anonymous wires become part of their consumer's expression
    def inlined(self, wire: str, consumer: Box) -> bool:
        w = self.d.wires[wire]
        if not w.anonymous or wire in self.outputs:
            return False
        users = self.d.consumers(wire)
        if len(users) != 1 or sum(u.wire == wire for u in consumer.inputs) != 1:
            return False
        box = self.d.producer(wire)
        if box is None or len(box.outputs) != 1 or box.op in ("call", "slot", "param"):
            return False
        if box.op == "contract" and consumer.op == "contract":
            return False
        use = next(u for u in consumer.inputs if u.wire == wire)
        return use.axes == w.axes and w.axes == self.natural_axes(box)

    def natural_axes(self, box: Box) -> tuple[str, ...] | None:
        """The axes the parser gives this box's output when it is nested in an expression
        (None: a nested use has no axes to give it; the box is written as a statement)."""
        ins = tuple(u.axes for u in box.inputs)
        if box.op in ("contract", "add", "sub", "div", "pow"):
            return _union(*ins)
        if box.op in ("const", "size"):
            return ()
        spec = OPS.get(box.op)
        if spec is None:
            return ins[0] if ins else ()
        if spec.needs_target:
            return None
        try:
            return spec.out_axes(ins, box.attr("along") or (), dict(box.attrs))
        except AnatError:  # not as the parser would build it nested: a statement
            return None

    def program(self) -> list[str]:
        lines = []
        if self.d.doc:
            lines.extend(f"# {line}".rstrip() for line in self.d.doc.splitlines())
        head = f"anatomy {self.d.name}{self.d.signature}"
        if self.d.fills:
            head += f" fills {self.d.fills}"
        lines.append(head)
        if self.d.dims:
            parts = [d.name if d.expr is None else f"{d.name} = {d.expr}"
                     for d in self.d.dims.values()]
            lines.append("  dims " + ", ".join(parts))
        for box in self.d.boxes:
            if box.op == "param" and box.attr("implicit"):
                continue
            if len(box.outputs) == 1 and self._skip(box.outputs[0]):
                continue
            lines.append("  " + self.statement(box))
        return lines

    def _skip(self, wire: str) -> bool:
        users = self.d.consumers(wire)
        return len(users) == 1 and self.inlined(wire, users[0])

    def statement(self, box: Box) -> str:
        self.stem = box.outputs[0]
        if box.op == "param":
            w = self.d.wires[box.outputs[0]]
            init = box.attr("init")
            return f"param {w.name}[{', '.join(w.axes)}] ~ {self.init(init)}"
        targets = ", ".join(f"{o}[{', '.join(self.d.wires[o].axes)}]" for o in box.outputs)
        expected = self.d.wires[box.outputs[0]].axes
        if box.op == "contract" and len(box.inputs) == 1:
            return f"{targets} = {self.use(box.inputs[0], box, expected, 0, factor=True)}"
        return f"{targets} = {self.expr(box, expected, root=True)}"

    def init(self, init: tuple) -> str:
        name, *args = init
        return name if not args else f"{name}({', '.join(str(a) if isinstance(a, str) else _num(a) for a in args)})"

    def use(self, u: Use, consumer: Box, expected, prec: int, factor: bool = False,
            left: bool = False) -> str:
        if self.inlined(u.wire, consumer):
            box = self.d.producer(u.wire)
            text = self.expr(box, expected)
            mine = _PREC.get(box.op, 5)
            # `*` and `/` associate to the left: `a / b / c` and `a / b * c` need no brackets
            # (and long chains of them must not exceed the parser's bracket nesting limit)
            chained = left and box.op == "div" and consumer.op in ("div", "contract")
            return f"({text})" if mine < prec or (mine == prec and prec in (2, 4)
                                                  and box.op != "contract"
                                                  and not chained) else text
        w = self.d.wires[u.wire]
        if factor or u.axes != w.axes:
            return f"{u.wire}[{', '.join(u.axes)}]"
        return u.wire

    def expr(self, box: Box, expected, root: bool = False) -> str:
        op = box.op
        if op == "const":
            return _num(box.attr("value"))
        if op == "size":
            return box.attr("axis")
        if op == "index":
            return f"index({box.attr('axis')})"
        if op == "neg":
            return "-" + self.use(box.inputs[0], box, expected, 3)
        if op in _SYMBOL:
            p = _PREC[op]
            left = self.use(box.inputs[0], box, expected, p, left=True)
            right_prec = p + 1 if op != "pow" else 3
            right = self.use(box.inputs[1], box, expected if op != "pow" else None, right_prec)
            return f"{left} {_SYMBOL[op]} {right}"
        if op == "contract":
            return " * ".join(self.use(u, box, None, 2, factor=True, left=i == 0)
                              for i, u in enumerate(box.inputs))
        if op in ("call", "slot"):
            callee = box.attr("anatomy") or box.attr("slot")
            args = [self.use(u, box, None, 0) for u in box.inputs]
            args += [f"{k}={v}" for k, v in box.attr("dims") or ()]
            prefix = "slot " if op == "slot" else ""
            return f"{prefix}{callee}({', '.join(args)})"
        if op == "split":
            return f"split({self.use(box.inputs[0], box, None, 0)})"
        if op == "linear":
            return self.linear(box, expected)
        spec: OpSpec = OPS[op]
        through = expected if keeps_axes(op) else None
        names = box.attr("tensor_options") or ()
        n_pos = len(box.inputs) - len(names)
        if spec.affine and box.attr("affine", True):  # its own parameters: not written
            n_pos = 1
            self.param_names(spec.affine)
        args = [self.use(u, box, through, 0) for u in box.inputs[:n_pos]]
        args += list(box.attr("along") or ())
        for key, default in spec.options.items():
            value = box.attr(key)
            if value is not None and value != default:
                args.append(f"{key}={_num(value) if not isinstance(value, tuple) else value}")
        for key, u in zip(names, box.inputs[n_pos:]):
            args.append(f"{key}={self.use(u, box, None, 0)}")
        return f"{op}({', '.join(args)})"

    def param_names(self, roles) -> list[str]:
        return [implicit_param_name(role, self.stem, self.implicit_count) for role in roles]

    def linear(self, box: Box, expected) -> str:
        x, w = box.inputs[0], box.inputs[1]
        x_axes = x.axes
        in_axes, out_axes = box.attr("in_axes"), box.attr("out_axes")
        args = [self.use(x, box, None, 0)]
        if expected is not None:
            default_in = tuple(a for a in x_axes if a not in expected)
        else:
            default_in = x_axes[-1:]
        if in_axes != default_in:
            args.append(f"in=[{', '.join(in_axes)}]")
            default_in = in_axes
        default_out = None if expected is None else \
            tuple(a for a in expected if a not in x_axes or a in default_in)
        if out_axes != default_out:
            args.append(f"out=[{', '.join(out_axes)}]")
        (default_name,) = self.param_names(("w",))
        if w.wire != default_name:
            args.append(f"name={w.wire}")
        if box.attr("bias"):
            self.param_names(("b",))
            args.append("bias=true")
        init = self.d.producer(w.wire).attr("init")
        if init != ("fan_in", *in_axes):
            args.append(f"init={init[0]}")
        return f"linear({', '.join(args)})"


def print_diagram(d: Diagram) -> str:
    """The .anat text of one diagram."""
    return "\n".join(_Printer(d).program()) + "\n"


def print_program(program: Program) -> str:
    """The .anat text of a program's own slots and anatomies (its `use`s are not inlined)."""
    parts = []
    for name, sig in program.slots.items():
        parts.append(f"slot {name}{sig}\n")
    parts.extend(print_diagram(d) for d in program)
    return "\n".join(parts)


def expression(d: Diagram, wire: str) -> str:
    """The .anat text of the expression that computes `wire` (anonymous wires used once
    inlined, as in a statement), e.g. `1 / sqrt(n)` for a scale factor."""
    return _Printer(d).expr(d.producer(wire), d.wires[wire].axes)
