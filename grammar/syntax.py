"""The syntax of a .anat file as typed nodes: what the parser read, before any checking.

`read(text, file)` parses the text and turns lark's tree into these nodes with a lark
Transformer (one method per grammar rule, named after it), so the builder that makes
diagrams (grammar/builder.py) and the loader (anatomy/program.py) see named fields, never
lark's trees or the position of a child.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lark import Token, v_args
from lark.visitors import Transformer_NonRecursive

from anatomy.errors import SourceLoc

from .parser import parse, source_lines


@dataclass(frozen=True)
class Node:
    line: int = field(kw_only=True)
    col: int = field(kw_only=True)


@dataclass(frozen=True)
class Ident(Node):
    """A name where the text names something: an axis, an anatomy, an option."""
    name: str


# -- expressions ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Expr(Node):
    depth: int = field(default=1, kw_only=True)  # expression nodes on the longest path down


@dataclass(frozen=True)
class Number(Expr):
    text: str


@dataclass(frozen=True)
class Ref(Expr):
    """A bare name: a wire, a dim or an axis."""
    name: str


@dataclass(frozen=True)
class Indexed(Expr):
    """`x[t, d]`: a wire read with these axis names."""
    name: str
    axes: tuple[Ident, ...]


@dataclass(frozen=True)
class Kwarg(Node):
    key: str
    value: Expr


@dataclass(frozen=True)
class Call(Expr):
    """`f(a, b, key=c)`: a built-in box or another anatomy; `slot f(...)` when `slot`."""
    name: str
    args: tuple[Expr | Kwarg, ...]
    slot: bool = False


@dataclass(frozen=True)
class ListExpr(Expr):
    """`[a, b]`: only an option's value."""
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Binary(Expr):
    """`a op b` with op one of add, sub, mul, div, pow."""
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Neg(Expr):
    operand: Expr


# -- statements -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DimDecl(Node):
    name: str
    value: Expr | None


@dataclass(frozen=True)
class Dims(Node):
    dims: tuple[DimDecl, ...]


@dataclass(frozen=True)
class Init(Node):
    """`~ normal(0.02)`: a parameter's initialiser and its arguments."""
    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Param(Node):
    name: str
    axes: tuple[Ident, ...]
    init: Init | None


@dataclass(frozen=True)
class Target(Node):
    """The left of an assignment: `y` (axes from the right) or `y[t, d]` (`y[]`: a scalar)."""
    name: str
    axes: tuple[Ident, ...] | None


@dataclass(frozen=True)
class Assign(Node):
    targets: tuple[Target, ...]
    expr: Expr


Statement = Dims | Param | Assign


# -- top level ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PortDecl(Node):
    name: str
    axes: tuple[Ident, ...]


@dataclass(frozen=True)
class SignatureDecl(Node):
    inputs: tuple[PortDecl, ...]
    outputs: tuple[PortDecl, ...]


@dataclass(frozen=True)
class AnatomyDecl(Node):
    name: str
    signature: SignatureDecl
    fills: Ident | None
    statements: tuple[Statement, ...]
    doc: str = ""  # the comment block directly above it


@dataclass(frozen=True)
class SlotDecl(Node):
    name: str
    signature: SignatureDecl


@dataclass(frozen=True)
class UseDecl(Node):
    path: str


@dataclass(frozen=True)
class SourceFile:
    """One file's declarations in order, with what is needed to locate errors in it."""
    file: str
    lines: list[str]
    items: tuple[UseDecl | SlotDecl | AnatomyDecl, ...]

    def loc(self, node: Node | None) -> SourceLoc:
        if node is None or node.line <= 0:
            return SourceLoc(self.file, 0, 0)
        text = self.lines[node.line - 1] if node.line <= len(self.lines) else ""
        return SourceLoc(self.file, node.line, node.col, text)

    def of(self, kind: type) -> list:
        return [item for item in self.items if isinstance(item, kind)]


def _at(meta_or_token) -> dict[str, int]:
    if isinstance(meta_or_token, Token):
        return {"line": meta_or_token.line or 0, "col": meta_or_token.column or 0}
    if getattr(meta_or_token, "empty", True):
        return {"line": 0, "col": 0}
    return {"line": meta_or_token.line, "col": meta_or_token.column}


def _deeper(*children) -> int:
    return 1 + max((c.depth for c in children if isinstance(c, Expr)), default=0)


def _binary(op: str, meta, left: Expr, right: Expr) -> Binary:
    return Binary(op, left, right, depth=_deeper(left, right), **_at(meta))


def _ident(token: Token) -> Ident:
    return Ident(str(token), **_at(token))


@v_args(meta=True)
class ToSyntax(Transformer_NonRecursive):
    """lark's tree to syntax nodes: one method per rule of anat.lark (non-recursive, so a long
    chain `a + a + ... + a` does not exhaust Python's stack)."""

    # expressions
    def number(self, meta, children):
        return Number(str(children[0]), **_at(meta))

    def ref(self, meta, children):
        return Ref(str(children[0]), **_at(meta))

    def indexed(self, meta, children):
        name, axes = children
        return Indexed(str(name), axes or (), **_at(meta))

    def axis_list(self, meta, children):
        return tuple(_ident(t) for t in children)

    def add(self, meta, children):
        return _binary("add", meta, *children)

    def sub(self, meta, children):
        return _binary("sub", meta, *children)

    def mul(self, meta, children):
        return _binary("mul", meta, *children)

    def div(self, meta, children):
        return _binary("div", meta, *children)

    def pow(self, meta, children):
        return _binary("pow", meta, *children)

    def neg(self, meta, children):
        return Neg(children[0], depth=_deeper(children[0]), **_at(meta))

    def call(self, meta, children, slot=False):
        name, *args = children
        args = tuple(a for a in args if a is not None)
        values = [a.value if isinstance(a, Kwarg) else a for a in args]
        return Call(str(name), args, slot, depth=_deeper(*values), **_at(meta))

    def slot_call(self, meta, children):
        return self.call(meta, children, slot=True)

    def kwarg(self, meta, children):
        key, value = children
        return Kwarg(str(key), value, **_at(meta))

    def list(self, meta, children):
        items = tuple(c for c in children if c is not None)
        return ListExpr(items, depth=_deeper(*items), **_at(meta))

    # statements
    def dims(self, meta, children):
        return Dims(tuple(children), **_at(meta))

    def dim(self, meta, children):
        name, value = children
        return DimDecl(str(name), value, **_at(meta))

    def param(self, meta, children):
        name, axes, init = children
        return Param(str(name), axes or (), init, **_at(meta))

    def init(self, meta, children):
        name, *args = children
        return Init(str(name), tuple(a for a in args if a is not None), **_at(meta))

    def assign(self, meta, children):
        *targets, expr = children
        return Assign(tuple(targets), expr, **_at(meta))

    def target(self, meta, children):
        name, *axes = children
        # `y` takes its axes from the right side; `y[]` is a scalar
        return Target(str(name), (axes[0] or ()) if axes else None, **_at(meta))

    # top level
    def port(self, meta, children):
        name, axes = children
        return PortDecl(str(name), axes or (), **_at(meta))

    def ports(self, meta, children):
        return tuple(p for p in children if p is not None)

    def signature(self, meta, children):
        inputs, outputs = children
        return SignatureDecl(inputs, outputs, **_at(meta))

    def fills(self, meta, children):
        return _ident(children[0])

    def anatomy(self, meta, children):
        name, signature, fills, *statements = children
        return AnatomyDecl(str(name), signature, fills,
                           tuple(s for s in statements if s is not None), **_at(meta))

    def slot_decl(self, meta, children):
        name, signature = children
        return SlotDecl(str(name), signature, **_at(meta))

    def use(self, meta, children):
        return UseDecl(str(children[0])[1:-1], **_at(meta))

    def start(self, meta, children):
        return tuple(c for c in children if c is not None)


def read(text: str, file: str = "<string>") -> SourceFile:
    """Parse .anat source text into its syntax, or raise AnatError at the first syntax error.
    Each anatomy carries the comment block directly above it as its doc."""
    lines = source_lines(text)
    items = ToSyntax().transform(parse(text, file))
    items = tuple(_with_doc(item, lines) if isinstance(item, AnatomyDecl) else item
                  for item in items)
    return SourceFile(file, lines, items)


def _with_doc(item: AnatomyDecl, lines: list[str]) -> AnatomyDecl:
    out = []
    i = item.line - 2
    while i >= 0 and lines[i].strip().startswith("#"):
        out.append(lines[i].strip().lstrip("#").strip())
        i -= 1
    doc = "\n".join(reversed(out)).strip()
    return AnatomyDecl(item.name, item.signature, item.fills, item.statements, doc,
                       line=item.line, col=item.col)
