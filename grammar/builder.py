"""Syntax to diagram IR: one statement becomes one box (nested sub-expressions become boxes
of their own, on anonymous wires), with axes checked as far as the text alone allows.

The builder reads the typed syntax of grammar/syntax.py; each kind of expression has its own
method. Sizes are checked later, by anatomy.shapes, once dims are known.
"""

from __future__ import annotations

from typing import Any, ClassVar

from anatomy.dims import MAX_DIM, DimExpr
from anatomy.errors import AnatError, SourceLoc, did_you_mean
from anatomy.ir import (
    Axes,
    Box,
    Diagram,
    Dim,
    Port,
    Signature,
    Use,
    Wire,
    freeze_attrs,
    implicit_param_name,
    time_axis_of,
)
from anatomy.ops import AFFINE_INIT, INITS, OPS, OPTION_SPELLING, OpSpec, keeps_axes, usage_of

from .syntax import (
    AnatomyDecl,
    Assign,
    Binary,
    Call,
    Dims,
    Expr,
    Ident,
    Indexed,
    Init,
    Kwarg,
    ListExpr,
    Neg,
    Node,
    Number,
    Param,
    Ref,
    SignatureDecl,
    SourceFile,
)

MAX_EXPR_DEPTH = 200  # expression nodes on one path; `x` and `x[t, d]` count the same


def union_axes(*axes_lists: Axes) -> Axes:
    out: list[str] = []
    for axes in axes_lists:
        out.extend(a for a in axes if a not in out)
    return tuple(out)


class Context:
    """What a file's statements may refer to beyond their own anatomy."""

    def __init__(self, source: SourceFile, signatures: dict[str, Signature],
                 slots: dict[str, Signature]):
        self.source = source
        self.file = source.file
        self.signatures, self.slots = signatures, slots

    def loc(self, node: Node | None) -> SourceLoc:
        return self.source.loc(node)


def parse_signature(ctx: Context, node: SignatureDecl) -> Signature:
    """A declared signature as ports, with repeated names and axes refused."""
    inputs, outputs = (tuple(Port(p.name, _axis_list(ctx, p.axes), ctx.loc(p)) for p in ports)
                       for ports in (node.inputs, node.outputs))
    if not outputs:
        raise AnatError("a signature needs at least one output", ctx.loc(node))
    seen: dict[str, Port] = {}
    for p in inputs + outputs:
        if p.name in seen:  # point at the second one, like every other redefinition
            raise AnatError(f"port `{p.name}` appears twice in the signature", p.loc,
                            related=[(seen[p.name].loc, "first here")])
        seen[p.name] = p
    return Signature(inputs, outputs)


def _axis_list(ctx: Context, idents: tuple[Ident, ...]) -> Axes:
    axes = tuple(i.name for i in idents)
    for i, a in enumerate(axes):
        if a in axes[:i]:
            raise AnatError(f"axis `{a}` is listed twice", ctx.loc(idents[i]),
                            hint="an axis names one dimension; rename one of them")
    return axes


class AnatomyBuilder:
    """Builds one Diagram from an `anatomy` declaration."""

    def __init__(self, ctx: Context, decl: AnatomyDecl):
        self.ctx = ctx
        self.decl = decl
        self.name = decl.name
        self.signature = parse_signature(ctx, decl.signature)
        self.fills = decl.fills.name if decl.fills is not None else None
        self.doc = decl.doc
        self.wires: dict[str, Wire] = {}
        self.boxes: list[Box] = []
        self.dims: dict[str, Dim] = {}
        self.axes_seen: set[str] = set()
        self.anon = 0
        self.stem = self.name
        self.implicit_count: dict[str, int] = {}
        self.written = {t.name for stmt in decl.statements if isinstance(stmt, Assign)
                        for t in stmt.targets}
        for p in self.signature.inputs:
            self._define(p.name, p.axes, "input", p.loc)

    # -- registry -------------------------------------------------------------------------
    def _define(self, name: str, axes: Axes, role: str, loc: SourceLoc) -> None:
        if name in self.wires:
            prev = self.wires[name].loc
            raise AnatError(f"`{name}` is already defined", loc,
                            related=[(prev, "first defined here")] if prev.line else [],
                            hint="every wire is assigned once; pick a new name")
        if name in OPS:
            raise AnatError(f"`{name}` is the name of a built-in box", loc,
                            hint="pick another wire name")
        self.wires[name] = Wire(name, axes, role, loc)
        self.axes_seen.update(axes)

    def _fresh(self) -> str:
        """The next anonymous wire name `_N`, skipping any the program names itself (the
        printer writes an anonymous wire it cannot inline as a statement `_N[...] = ...`)."""
        self.anon += 1
        while f"_{self.anon}" in self.wires or f"_{self.anon}" in self.written:
            self.anon += 1
        return f"_{self.anon}"

    def _emit(self, op: str, inputs: list[Use], axes: Axes, loc: SourceLoc,
              name: str | None = None, role: str = "internal", **attrs: Any) -> Use:
        out = name or self._fresh()
        self._define(out, axes, role, loc)
        self.boxes.append(Box(op, tuple(inputs), (out,), freeze_attrs(attrs), loc))
        return Use(out, axes)

    def _implicit_param(self, role: str, axes: Axes, init: tuple, loc: SourceLoc,
                        name: str | None) -> Use:
        if name is None:
            name = implicit_param_name(role, self.stem, self.implicit_count)
        return self._emit("param", [], axes, loc, name=name, role="param", init=init,
                          implicit=True)

    # -- statements -----------------------------------------------------------------------
    def build(self) -> Diagram:
        for stmt in self.decl.statements:
            if isinstance(stmt, Dims):
                self._dims(stmt)
            elif isinstance(stmt, Param):
                self._param(stmt)
            else:
                self._assign(stmt)
        for p in self.signature.outputs:
            w = self.wires.get(p.name)
            if w is None or w.role == "input" and p.name not in [i.name for i in self.inputs]:
                raise AnatError(f"output `{p.name}` is never assigned", p.loc,
                                hint=f"add a statement `{p.name}[{', '.join(p.axes)}] = ...`")
            if w.axes != p.axes:
                raise AnatError(f"output `{p.name}` has axes [{', '.join(w.axes)}] but the "
                                f"signature says [{', '.join(p.axes)}]", w.loc,
                                related=[(p.loc, "signature")])
        wires = dict(self.wires)
        for p in self.signature.outputs:
            if wires[p.name].role == "internal":
                wires[p.name] = Wire(p.name, wires[p.name].axes, "output", wires[p.name].loc)
        return Diagram(self.name, self.signature, self.dims, wires, self.boxes, self.fills,
                       self.ctx.file, self.doc, self.ctx.loc(self.decl))

    @property
    def inputs(self) -> tuple[Port, ...]:
        return self.signature.inputs

    @property
    def time_axis(self) -> str | None:
        """The time axis, as the IR defines it (`anatomy.ir.time_axis_of`)."""
        return time_axis_of(self.signature)

    def _dims(self, node: Dims) -> None:
        for d in node.dims:
            name, expr = d.name, d.value
            loc = self.ctx.loc(d)
            if name in self.dims:
                raise AnatError(f"dim `{name}` is declared twice", loc,
                                related=[(self.dims[name].loc, "first declared here")])
            self.dims[name] = Dim(name, None if expr is None else self._dim_expr(expr), loc)

    def _dim_expr(self, node: Expr) -> DimExpr:
        ops = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
        if isinstance(node, Number):
            text = node.text
            if not text.isdigit():
                raise AnatError(f"dims are whole numbers, not {text}", self.ctx.loc(node))
            if len(text.lstrip("0")) > len(str(MAX_DIM)) or int(text) > MAX_DIM:
                raise AnatError(f"dim value {text} is too large", self.ctx.loc(node))
            value = int(text)
            return DimExpr("num", (value,))
        if isinstance(node, Ref):
            return DimExpr("ref", (node.name,))
        if isinstance(node, Binary) and node.op in ops:
            return DimExpr(ops[node.op], (self._dim_expr(node.left), self._dim_expr(node.right)))
        raise AnatError("a dim is a number, another dim, or + - * / of them",
                        self.ctx.loc(node), hint="e.g. `dims h = 8, p = d / h`")

    def _param(self, node: Param) -> None:
        axes = _axis_list(self.ctx, node.axes)
        init = self._init(node.init, axes) if node.init is not None else ("normal", 0.02)
        self._emit("param", [], axes, self.ctx.loc(node), name=node.name, role="param",
                   init=init)

    def _init(self, node: Init, axes: Axes) -> tuple:
        name = node.name
        loc = self.ctx.loc(node)
        if name not in INITS:
            raise AnatError(f"unknown initialiser `{name}`", loc, hint=did_you_mean(name, INITS))
        args = node.args
        if name == "fan_in":
            names = []
            for a in args:
                if not isinstance(a, Ref) or a.name not in axes:
                    raise AnatError("fan_in takes axes of the parameter", self.ctx.loc(a),
                                    hint=f"e.g. fan_in({axes[0] if axes else 'd'})")
                names.append(a.name)
            return ("fan_in", *names) if names else ("fan_in", *axes[:1])
        if len(args) not in INITS[name]:
            want = " or ".join(str(n) for n in INITS[name])
            raise AnatError(f"initialiser `{name}` takes {want} numbers, got {len(args)}", loc)
        return (name, *(self._number(a) for a in args))

    def _number(self, node: Expr) -> float:
        if isinstance(node, Neg):
            return -self._number(node.operand)
        if isinstance(node, Number):
            return _to_number(node.text, self.ctx.loc(node))
        raise AnatError("expected a number here", self.ctx.loc(node))

    def _assign(self, node: Assign) -> None:
        expr = node.expr
        if expr.depth > MAX_EXPR_DEPTH:
            raise AnatError(f"expression nested more than {MAX_EXPR_DEPTH} deep",
                            self.ctx.loc(node), hint="split it into several statements")
        # `y` takes its axes from the right side; `y[]` is a scalar
        tgts = [(t.name, _axis_list(self.ctx, t.axes) if t.axes is not None else None,
                 self.ctx.loc(t)) for t in node.targets]
        self.stem = tgts[0][0]
        if len(tgts) > 1:
            self._multi_assign(tgts, expr, self.ctx.loc(node))
            return
        name, axes, loc = tgts[0]
        self._root(name, axes, expr, loc)

    def _root(self, name: str, axes: Axes | None, expr: Expr, loc: SourceLoc) -> None:
        if name in self.wires:
            self._define(name, (), "internal", loc)  # raises "already defined"
        factors = _flatten_mul(expr)
        scale = None
        if isinstance(expr, Binary) and expr.op == "div" and len(_flatten_mul(expr.left)) > 1:
            # `q * k / sqrt(n)`: a scalar divisor joins the product, so the summed axes are
            # contracted away instead of materialised
            factors = _flatten_mul(expr.left)
            scale = expr.right
        if len(factors) > 1 or isinstance(expr, (Ref, Indexed)):
            uses = [self._expr(f, None) for f in factors]
            if scale is not None:
                one = self._emit("const", [], (), self.ctx.loc(scale), value=1)
                denom = self._expr(scale, None)
                if denom.axes:
                    raise AnatError("in `a * b / c` at the top of a statement, c must be a "
                                    "scalar", self.ctx.loc(scale),
                                    hint="divide in a separate statement")
                uses.append(self._emit("div", [one, denom], (), self.ctx.loc(scale)))
            have = union_axes(*(u.axes for u in uses))
            out = axes if axes is not None else have
            self._check_kept(out, have, loc)
            self._emit("contract", uses, out, self.ctx.loc(expr), name=name)
            return
        u = self._expr(expr, axes)
        out = axes if axes is not None else u.axes
        self._check_kept(out, u.axes, loc)
        summed = [a for a in u.axes if a not in out]
        if summed:
            self._check_sum_over_terms(u.wire, summed, loc)
            self._check_sum_after_normaliser(u.wire, summed, loc)
        # composite outputs bind positionally, so only an identical order may be renamed
        positional = self.boxes and self.boxes[-1].op in ("call", "slot")
        if set(out) == set(u.axes) and self.boxes and self.boxes[-1].outputs == (u.wire,) \
                and self.wires[u.wire].anonymous and (out == u.axes or not positional):
            last = self.boxes.pop()
            del self.wires[u.wire]
            self._define(name, out, "internal", loc)
            self.boxes.append(Box(last.op, last.inputs, (name,), last.attrs, last.loc))
        else:
            self._emit("contract", [u], out, loc, name=name)

    def _check_sum_over_terms(self, wire: str, summed: list[str], loc: SourceLoc) -> None:
        """Refuse `y[t] = a[t, s] + b[t]`: summing s would count b size(s) times."""
        by_output = {b.outputs[0]: b for b in self.boxes}
        stack = [wire]
        while stack:
            box = by_output.get(stack.pop())
            if box is None or box.op not in ("add", "sub", "neg", "div", "contract"):
                continue
            if box.op in ("add", "sub"):
                for term in box.inputs:
                    lacking = [a for a in summed if a not in term.axes]
                    if lacking:
                        raise AnatError(
                            f"axis {lacking[0]} is summed over the whole right side, but a "
                            f"term of this sum lacks it (it would be counted size({lacking[0]})"
                            " times)", loc, hint="contract in its own statement, then add")
            inputs = box.inputs[:1] if box.op == "div" else box.inputs
            stack.extend(u.wire for u in inputs if self.wires[u.wire].anonymous)

    def _check_sum_after_normaliser(self, wire: str, summed: list[str],
                                    loc: SourceLoc) -> None:
        """Refuse `w[h, t, s] = softmax(q * k[s, h, n], s)`: the product nested in softmax
        keeps n, which would be summed over the normalised weights, not inside the score."""
        box = self.boxes[-1] if self.boxes else None
        if box is not None and box.outputs == (wire,) and self.wires[wire].anonymous \
                and box.op in ("softmax", "normalise", "l2normalise"):
            raise AnatError(
                f"axis {summed[0]} would be summed after {box.op}, over normalised values "
                f"(a product nested in a box keeps its axes)", loc,
                hint=f"contract in its own statement first, e.g. `score[h, t, s] = q * "
                     f"k[s, h, n]`, then `{box.op}(score, ...)`")

    def _check_kept(self, out: Axes, have: Axes, loc: SourceLoc) -> None:
        missing = [a for a in out if a not in have]
        if missing:
            raise AnatError(
                f"axis {missing[0]} is on the left but not on the right "
                f"(the right has [{', '.join(have)}])", loc,
                hint="axes on the left must come from the right; axes only on the right "
                     "are summed")

    def _multi_assign(self, tgts, expr: Expr, loc: SourceLoc) -> None:
        if not isinstance(expr, Call):
            raise AnatError("several targets need a box with several outputs (split or an "
                            "anatomy call)", loc)
        for name, axes, tloc in tgts:
            if axes is None:
                raise AnatError(f"target `{name}` needs its axes written out", tloc)
        if not expr.slot and expr.name in OPS and expr.name != "split":
            raise AnatError(f"{expr.name} has one output, but there are {len(tgts)} "
                            "targets", loc, hint="several targets need a box with several "
                            "outputs (split or an anatomy call)")
        if not expr.slot and expr.name == "split":
            args, kwargs = self._split_args(expr)
            if len(args) != 1 or kwargs:
                raise AnatError("split takes one tensor: `a[t, k1], b[t, k2] = split(x)`", loc)
            x = self._expr(args[0], None)
            self._split(x, tgts, loc)
            return
        self._composite(expr, [(n, a) for n, a, _ in tgts], None)

    # -- expressions ----------------------------------------------------------------------
    def _expr(self, node: Expr, expected: Axes | None) -> Use:
        """The wire an expression computes, boxes emitted for it; `expected` is the axes the
        statement's target asks for, passed down through boxes that keep their input's axes."""
        method = self._EXPR.get(type(node))
        if method is None:  # pragma: no cover - every expression node has a method
            raise AnatError(f"unexpected {type(node).__name__} here", self.ctx.loc(node))
        return method(self, node, expected)

    def _number_expr(self, node: Number, expected: Axes | None) -> Use:
        loc = self.ctx.loc(node)
        return self._emit("const", [], (), loc, value=_to_number(node.text, loc))

    def _ref(self, node: Ref, expected: Axes | None) -> Use:
        if node.name in self.wires:
            return Use(node.name, self.wires[node.name].axes)
        if node.name in self.dims or node.name in self.axes_seen:
            return self._emit("size", [], (), self.ctx.loc(node), axis=node.name)
        raise self._unknown(node.name, node)

    def _indexed(self, node: Indexed, expected: Axes | None) -> Use:
        axes = _axis_list(self.ctx, node.axes)
        if node.name not in self.wires:
            raise self._unknown(node.name, node)
        wire = self.wires[node.name]
        if len(axes) != len(wire.axes):
            raise AnatError(
                f"`{node.name}` has {len(wire.axes)} axes [{', '.join(wire.axes)}] but is "
                f"indexed with {len(axes)}", self.ctx.loc(node),
                related=[(wire.loc, "defined here")] if wire.loc.line else [],
                hint="index a wire with one name per axis, in order")
        self.axes_seen.update(axes)
        return Use(node.name, axes)

    def _list(self, node: ListExpr, expected: Axes | None) -> Use:
        raise AnatError("a [list] is only allowed as an option value (e.g. out=[h, p])",
                        self.ctx.loc(node))

    def _neg(self, node: Neg, expected: Axes | None) -> Use:
        x = self._expr(node.operand, expected)
        return self._emit("neg", [x], x.axes, self.ctx.loc(node))

    def _binary(self, node: Binary, expected: Axes | None) -> Use:
        loc = self.ctx.loc(node)
        if node.op == "mul":
            uses = [self._expr(f, None) for f in _flatten_mul(node)]
            return self._emit("contract", uses, union_axes(*(u.axes for u in uses)), loc)
        a = self._expr(node.left, expected)
        b = self._expr(node.right, expected if node.op != "pow" else None)
        return self._emit(node.op, [a, b], union_axes(a.axes, b.axes), loc)

    def _call(self, node: Call, expected: Axes | None) -> Use:
        if node.slot:
            return self._composite(node, None, expected)
        if node.name in OPS:
            return self._builtin(OPS[node.name], node, expected)
        if node.name in self.ctx.signatures:
            return self._composite(node, None, expected)
        loc = self.ctx.loc(node)
        if node.name in INITS:
            raise AnatError(f"`{node.name}` is an initialiser, not a box", loc,
                            hint=f"write `param NAME[axes] ~ {node.name}(...)`")
        raise AnatError(f"unknown box `{node.name}`", loc,
                        hint=did_you_mean(node.name, set(OPS) | set(self.ctx.signatures),
                                          "box"))

    _EXPR: ClassVar = {Number: _number_expr, Ref: _ref, Indexed: _indexed, ListExpr: _list, Neg: _neg,
             Binary: _binary, Call: _call}

    def _unknown(self, ident: str, node) -> AnatError:
        if ident == getattr(self, "stem", None):
            return AnatError(
                f"`{ident}` refers to itself: a wire is defined once, from wires defined "
                "before it, so a recurrence cannot be written as a state that reads its own "
                "previous value", self.ctx.loc(node),
                hint="write the recurrence's box instead: `scan(u, log_a, t)` for "
                     "S_t = a_t S_{t-1} + u_t (a decay: diagonal transition), or "
                     "`delta_rule(q, k, v, beta, log_a, t)` for "
                     "S_t = (I - beta_t k_t k_t^T) a_t S_{t-1} + beta_t k_t v_t^T "
                     "(a matrix transition: DeltaNet, Gated DeltaNet, KDA); docs/language.md")
        known = set(self.wires) | set(self.dims)
        return AnatError(f"unknown name `{ident}`", self.ctx.loc(node),
                         hint=did_you_mean(ident, known, "wire"))

    def _split_args(self, node: Call) -> tuple[list[Expr], dict[str, Expr]]:
        args, kwargs = [], {}
        for a in node.args:
            if isinstance(a, Kwarg):
                if a.key in kwargs:
                    raise AnatError(f"option `{a.key}` given twice", self.ctx.loc(a))
                kwargs[a.key] = a.value
            else:
                if kwargs:
                    raise AnatError("positional argument after a keyword option",
                                    self.ctx.loc(a))
                args.append(a)
        return args, kwargs

    def _axis_arg(self, node: Expr, spec: OpSpec, role: str) -> str:
        if isinstance(node, Ref):
            axis = node.name
            if axis in self.wires and axis not in self.axes_seen:
                raise AnatError(f"{spec.name} expects an axis name for `{role}`, but "
                                f"`{axis}` is a wire", self.ctx.loc(node))
            self.axes_seen.add(axis)
            return axis
        raise AnatError(f"{spec.name} expects an axis name for `{role}`", self.ctx.loc(node),
                        hint=usage_of(spec))

    def _builtin(self, spec: OpSpec, node: Call, expected: Axes | None) -> Use:
        loc = self.ctx.loc(node)
        args, kwargs = self._split_args(node)
        n_t = len(args) - len(spec.axes) if spec.tensors == -1 else spec.tensors
        if spec.axes and spec.axes[-1].endswith("*"):
            n_t = spec.tensors
            if len(args) < n_t + len(spec.axes):
                raise AnatError(f"{spec.name} takes {n_t} tensor(s) and at least one axis",
                                loc, hint=usage_of(spec))
        elif len(args) != n_t + len(spec.axes) or n_t < (2 if spec.tensors == -1 else 0):
            raise AnatError(f"{spec.name} takes {_arity(spec)}, got {len(args)} arguments",
                            loc, hint=usage_of(spec))
        if spec.name == "linear":
            return self._linear(args, kwargs, expected, loc)
        # tensors first; elementwise functions pass the expectation through
        through = expected if keeps_axes(spec.name) else None
        tensors = [self._expr(a, through) for a in args[:n_t]]
        extra = max(len(args) - n_t - len(spec.axes), 0)  # a variadic last axis argument
        roles = list(spec.axes) + list(spec.axes[-1:]) * extra
        axes = [self._axis_arg(a, spec, role.rstrip("*")) for a, role in zip(args[n_t:], roles)]
        attrs: dict[str, Any] = {}
        if spec.axes:
            attrs["along"] = tuple(axes)
        for key, value_node in kwargs.items():
            opt = OPTION_SPELLING.get(key, key)
            if opt in spec.tensor_options:
                tensors.append(self._expr(value_node, None))
                attrs.setdefault("tensor_options", ())
                attrs["tensor_options"] += (opt,)
                continue
            if opt not in spec.options:
                raise AnatError(f"{spec.name} has no option `{key}`", self.ctx.loc(value_node),
                                hint=did_you_mean(key, list(spec.options)
                                                  + list(spec.tensor_options), "option"))
            attrs[opt] = self._option(spec, opt, value_node)
        return self._shape_builtin(spec, tensors, tuple(axes), attrs, expected, loc)

    def _option(self, spec: OpSpec, opt: str, node: Expr) -> Any:
        default = spec.options[opt]
        loc = self.ctx.loc(node)
        if isinstance(default, bool):
            if _is_bool(node):
                return node.name == "true"
            raise AnatError(f"option `{opt}` of {spec.name} is true or false", loc)
        if isinstance(default, (int, float)):
            value = self._number(node)
            return int(value) if isinstance(default, int) and float(value).is_integer() \
                else value
        if isinstance(node, Ref):
            return node.name
        if isinstance(node, ListExpr):
            if not all(isinstance(c, Ref) for c in node.items):
                raise AnatError(f"option `{opt}` takes a list of axis names", loc)
            return tuple(c.name for c in node.items)
        raise AnatError(f"option `{opt}` of {spec.name} takes a name or a list of axes", loc)

    def _shape_builtin(self, spec: OpSpec, tensors: list[Use], axes: Axes,
                       attrs: dict[str, Any], expected: Axes | None, loc: SourceLoc) -> Use:
        """The box of a built-in: its output axes and checks come from the op's contract
        (`OpSpec.out_axes`, anatomy/ops.py), and so do the parameters it makes for itself
        (`OpSpec.affine`); the builder adds the attributes that name the axes a reshape or
        concat moves."""
        name = spec.name
        contract_attrs = {**attrs, "time": self.time_axis} if name == "reshape" else attrs
        out = spec.out_axes(tuple(u.axes for u in tensors), axes, contract_attrs, expected, loc)
        if spec.affine and attrs.get("affine", True):
            over = axes[::-1] if spec.affine_reversed else axes
            for role in spec.affine:
                tensors.append(self._implicit_param(role, over, AFFINE_INIT[role], loc, None))
        if name in ("index", "size"):
            return self._emit(name, [], out, loc, axis=axes[0])
        if name == "concat":
            joined = next(a for a in out if all(a not in u.axes for u in tensors))
            parts = tuple(next(a for a in u.axes if a not in out) for u in tensors)
            return self._emit(name, tensors, out, loc, axis=joined, parts=parts)
        if name == "reshape":
            x = tensors[0]
            return self._emit(name, tensors, out, loc,
                              merge=tuple(a for a in x.axes if a not in out),
                              into=tuple(a for a in out if a not in x.axes))
        return self._emit(name, tensors, out, loc, **attrs)

    def _linear(self, args, kwargs, expected: Axes | None, loc: SourceLoc) -> Use:
        spec = OPS["linear"]
        x = self._expr(args[0], None)
        opts = {OPTION_SPELLING.get(k, k): v for k, v in kwargs.items()}
        for k in opts:
            if k not in spec.options:
                raise AnatError(f"linear has no option `{k}`", loc,
                                hint=did_you_mean(k, ["in", "out", "bias", "name", "init"],
                                                  "option"))
        parsed = {k: self._option(spec, k, v) if k != "bias" else None for k, v in opts.items()}
        bias = False
        if "bias" in opts:
            node = opts["bias"]
            if not _is_bool(node):
                raise AnatError("option `bias` of linear is true or false", loc)
            bias = node.name == "true"
        in_axes = _as_axes(parsed.get("in_axes"))
        out_axes = _as_axes(parsed.get("out_axes"))
        if in_axes is None:
            in_axes = tuple(a for a in x.axes if expected is None or a not in expected) \
                if expected is not None else x.axes[-1:]
        if out_axes is None:
            if expected is None:
                raise AnatError("linear cannot see its output axes here", loc,
                                hint="say them: linear(x, out=[h, p])")
            out_axes = tuple(a for a in expected if a not in x.axes or a in in_axes)
        for a in in_axes:
            if a not in x.axes:
                raise AnatError(f"linear maps from axis `{a}`, which its input "
                                f"[{', '.join(x.axes)}] lacks", loc)
        if not in_axes and not out_axes:
            raise AnatError("linear maps nothing to nothing here", loc,
                            hint="say its axes: linear(x, in=[d], out=[h, p])")
        time = self.time_axis
        if time in in_axes:
            raise AnatError(f"linear would map along the time axis `{time}`", loc,
                            hint=f"project per token: give the target the axis {time}, e.g. "
                                 f"`k[{time}, h, n] = linear(x)`, and read it as `k[s, h, n]`")
        kept = tuple(a for a in x.axes if a not in in_axes)
        clash = [a for a in out_axes if a in kept]
        if clash:
            raise AnatError(f"linear's output axis `{clash[0]}` is also an axis it keeps", loc)
        w_axes = in_axes + tuple(a if a not in in_axes else f"{a}_out" for a in out_axes)
        init = parsed.get("init")
        init_spec = (init,) if init else ("fan_in", *in_axes)
        if init and init not in INITS:
            raise AnatError(f"unknown initialiser `{init}`", loc, hint=did_you_mean(init, INITS))
        w = self._implicit_param("w", w_axes, init_spec, loc, parsed.get("name"))
        inputs = [x, w]
        if bias:
            b_axes = w_axes[len(in_axes):]
            inputs.append(self._implicit_param("b", b_axes, ("zeros",), loc, None))
        return self._emit("linear", inputs, kept + out_axes, loc, in_axes=in_axes,
                          out_axes=out_axes, bias=bias or None)

    def _split(self, x: Use, tgts, loc: SourceLoc) -> None:
        new_axes = []
        for name, axes, tloc in tgts:
            own = [a for a in axes if a not in x.axes]
            if len(own) != 1:
                raise AnatError(f"each target of split must have exactly one axis its input "
                                f"lacks; `{name}` has [{', '.join(own)}]", tloc)
            new_axes.append(own[0])
        gone = [a for a in x.axes if all(a not in axes for _, axes, _ in tgts)]
        if len(gone) != 1:
            raise AnatError("split needs exactly one input axis that no target keeps", loc)
        for name, axes, tloc in tgts:
            self._define(name, axes, "internal", tloc)
        self.boxes.append(Box("split", (x,), tuple(n for n, _, _ in tgts),
                              freeze_attrs({"axis": gone[0], "parts": tuple(new_axes)}), loc))

    def _composite(self, node: Call, targets: list[tuple[str, Axes]] | None,
                   expected: Axes | None) -> Use:
        loc = self.ctx.loc(node)
        fname = node.name
        is_slot = node.slot
        table = self.ctx.slots if is_slot else self.ctx.signatures
        if fname not in table:
            what = "slot" if is_slot else "anatomy"
            raise AnatError(f"unknown {what} `{fname}`", loc, hint=did_you_mean(fname, table,
                                                                                  what))
        sig = table[fname]
        args, kwargs = self._split_args(node)
        if len(args) != len(sig.inputs):
            raise AnatError(f"{fname} takes {len(sig.inputs)} inputs {sig}, got {len(args)}",
                            loc)
        uses = [self._expr(a, None) for a in args]
        rename: dict[str, str] = {}
        for u, p in zip(uses, sig.inputs):
            if len(u.axes) != len(p.axes):
                raise AnatError(f"input `{p.name}` of {fname} has axes [{', '.join(p.axes)}] "
                                f"but gets [{', '.join(u.axes)}]", loc)
            for a, b in zip(p.axes, u.axes):
                if rename.setdefault(a, b) != b:
                    raise AnatError(f"axis {a} of {fname} is bound to both {rename[a]} and {b}",
                                    loc)
        dims = {}
        for key, value in kwargs.items():
            number = self._number(value)
            if not float(number).is_integer() or number <= 0:
                raise AnatError(f"dim {key} must be a positive whole number", loc)
            dims[key] = int(number)
        attrs: dict[str, Any] = {"slot" if is_slot else "anatomy": fname,
                                 "dims": tuple(sorted(dims.items())) or None}
        if targets is None:
            if len(sig.outputs) != 1:
                raise AnatError(f"{fname} has {len(sig.outputs)} outputs; assign them: "
                                f"`a[...], b[...] = {fname}(...)`", loc)
            port = sig.outputs[0].axes
            # output axes the inputs do not determine are named by the target, positionally
            # (`qf[t, d] = pattention(x)` with pattention(x[t, i]) -> y[t, o]: o is d here)
            named = expected if expected is not None and len(expected) == len(port) \
                else port
            bound = {rename[a] for a in port if a in rename}
            out = tuple(rename.get(a, b if b not in bound else a) for a, b in zip(port, named))
            return self._emit("slot" if is_slot else "call", uses, out, loc, **attrs)
        if len(targets) != len(sig.outputs):
            raise AnatError(f"{fname} has {len(sig.outputs)} outputs but {len(targets)} "
                            "targets", loc)
        for (name, axes), p in zip(targets, sig.outputs):
            if len(axes) != len(p.axes):
                raise AnatError(f"output `{p.name}` of {fname} has {len(p.axes)} axes but "
                                f"`{name}` has {len(axes)}", loc)
            self._define(name, axes, "internal", loc)
        self.boxes.append(Box("slot" if is_slot else "call", tuple(uses),
                              tuple(n for n, _ in targets), freeze_attrs(attrs), loc))
        return Use(targets[0][0], targets[0][1])


def _as_axes(value) -> Axes | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def _flatten_mul(node: Expr) -> list[Expr]:
    """The factors of a product `a * b * c` (left to right), without recursion: a product of
    many factors nests as deep as it is long."""
    factors, stack = [], [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Binary) and n.op == "mul":
            stack.extend((n.right, n.left))
        else:
            factors.append(n)
    return factors


def _is_bool(node: Expr) -> bool:
    return isinstance(node, Ref) and node.name in ("true", "false")


def _to_number(text: str, loc: SourceLoc) -> int | float:
    if text.isdigit() and len(text.lstrip("0")) <= len(str(MAX_DIM)):  # (int() of a huge
        value = int(text)                                               # text is slow)
        if value <= MAX_DIM:
            return value
    value = float(text)
    if value == float("inf"):  # 1e400: it could not be written back as a number
        raise AnatError(f"the number {text} is too large", loc)
    return value


def _arity(spec: OpSpec) -> str:
    parts = []
    if spec.tensors == -1:
        parts.append("two or more tensors")
    elif spec.tensors:
        parts.append(f"{spec.tensors} tensor" + ("s" if spec.tensors > 1 else ""))
    if spec.axes:
        parts.append(f"{len(spec.axes)} axis name" + ("s" if len(spec.axes) > 1 else ""))
    return " and ".join(parts) or "no arguments"
