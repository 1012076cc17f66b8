"""Shape inference and checking: every named axis gets one size, or a clear error.

Sizes come from dims; axes without a dim (the sequence axes) stay free and are unified
with each other (`k[s, n]` used where k is `k[t, n]` says size(s) = size(t)).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import prod

from . import dims as dimlib
from .errors import AnatError, SourceLoc
from .ir import Diagram, Program, Signature
from .ops import OPS, SizeCall


class _Sizes:
    """Union-find over axis names, each class with an optional size and where it came from."""

    def __init__(self):
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = {}
        self.origin: dict[str, SourceLoc] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def get(self, a: str) -> int | None:
        return self.size.get(self.find(a))

    def fix(self, a: str, n: int, loc: SourceLoc) -> None:
        r = self.find(a)
        if r in self.size and self.size[r] != n:
            self._conflict(a, n, self.size[r], loc, self.origin[r])
        if r not in self.size:
            self.size[r], self.origin[r] = n, loc

    def unify(self, a: str, b: str, loc: SourceLoc) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        sa, sb = self.size.get(ra), self.size.get(rb)
        if sa is not None and sb is not None and sa != sb:
            self._conflict(b, sa, sb, loc, self.origin[rb], other=a)
        self.parent[rb] = ra
        if sa is None and sb is not None:
            self.size[ra], self.origin[ra] = sb, self.origin[rb]

    @staticmethod
    def _conflict(a, here, there, loc, there_loc, other=None) -> None:
        where = f"line {there_loc.line}" if there_loc.line else "its dim"
        what = f"axis {a}" if other is None else f"axis {a} (matched with {other})"
        raise AnatError(f"{what} is {here} here but {there} at {where}", loc,
                        related=[(there_loc, f"{a} is {there} here")] if there_loc.line else [],
                        hint="sizes of one axis must agree everywhere in a diagram")


@dataclass
class Shapes:
    """The checked sizes of one diagram at given dims."""

    diagram: Diagram
    dims: dict[str, int]
    sizes: _Sizes = field(repr=False)
    callees: dict[str, Shapes] = field(default_factory=dict, repr=False)

    def size(self, axis: str) -> int | None:
        return self.sizes.get(axis)

    def shape(self, wire: str) -> tuple[int | None, ...]:
        return tuple(self.size(a) for a in self.diagram.wires[wire].axes)

    def describe(self, name: str, axes) -> str:
        parts = []
        for a in axes:
            n = self.size(a)
            parts.append(f"{a}={n}" if n is not None else a)
        return f"{name}[{', '.join(parts)}]"

    def param_count(self) -> int | None:
        """How many parameter entries the diagram holds, composites included (None when a
        parameter's size depends on a free axis). Callees checked once are shared between
        calls, so each distinct one is counted once and multiplied by its calls."""
        return self._param_count({})

    def _param_count(self, memo: dict[int, int | None]) -> int | None:
        if id(self) in memo:
            return memo[id(self)]
        total: int | None = 0
        for b in self.diagram.params():
            n = self.shape(b.outputs[0])
            if any(x is None for x in n):
                total = None
                break
            total += prod(n)
        for callee in self.callees.values():
            c = callee._param_count(memo) if total is not None else None
            total = None if c is None else total + c
        memo[id(self)] = total
        return total

    def expanded_calls(self) -> int:
        """How many composite calls inlining every call would make (a call's callee counted
        again at each call, computed once per distinct callee)."""
        memo: dict[int, int] = {}

        def calls(s: Shapes) -> int:
            if id(s) not in memo:
                memo[id(s)] = sum(1 + calls(c) for c in s.callees.values())
            return memo[id(s)]
        return calls(self)

    def free_axes(self, params_only: bool = False) -> list[str]:
        """Axes (by class name) whose size is not known at these dims."""
        seen = []
        for w in self.diagram.wires.values():
            if params_only and w.role != "param":
                continue
            for a in w.axes:
                r = self.sizes.find(a)
                if self.sizes.get(a) is None and r not in seen:
                    seen.append(r)
        return seen


Memo = dict[tuple, Shapes]


def check(diagram: Diagram, overrides: dict[str, int] | None = None,
          _stack: tuple[str, ...] = (), _memo: Memo | None = None) -> Shapes:
    """Infer every axis size of `diagram` at these dims; raise AnatError on any conflict.

    Each composite is checked once per (callee, dims) and its `Shapes` shared by every call
    of it, so checking is linear in the program's size even when calls nest and repeat."""
    overrides = {k: v for k, v in (overrides or {}).items()}
    memo: Memo = {} if _memo is None else _memo
    env = dimlib.resolve(diagram.dims, overrides, f"anatomy {diagram.name}")
    sizes = _Sizes()
    shapes = Shapes(diagram, env, sizes)
    for name, value in env.items():
        sizes.fix(name, value, diagram.dims[name].loc)
    deferred = []
    for box in diagram.boxes:
        for u in box.inputs:
            wire = diagram.wires[u.wire]
            for wa, ua in zip(wire.axes, u.axes):
                sizes.unify(wa, ua, box.loc)
        op = box.op
        axes = box.attr("along", ())
        if op in OPS and OPS[op].tied:  # a mask's query and key axes
            sizes.unify(axes[0], axes[1], box.loc)
        elif op == "linear":
            w = diagram.wires[box.inputs[1].wire]
            n_in = len(box.attr("in_axes"))
            for wa, oa in zip(w.axes[n_in:], box.attr("out_axes")):
                sizes.unify(oa, wa, box.loc)  # the user's axis name stays the class's name
        elif op in OPS and OPS[op].sizes is not None:  # checked once every size is known
            deferred.append(box)
        elif op in ("call", "slot"):
            _check_composite(diagram, box, shapes, _stack, memo)
    for box in deferred:
        OPS[box.op].sizes(SizeCall(box.op, dict(box.attrs), sizes, box.loc))
    return shapes


def checked(diagram: Diagram, overrides: dict[str, int] | None = None) -> Diagram:
    """The diagram with its Shapes at these dims: a new Diagram (diagrams are frozen)."""
    return replace(diagram, shapes=check(diagram, overrides))


def _port_binding(sig: Signature, box, diagram: Diagram) -> list[tuple[str, str]]:
    """Pairs (callee axis, caller axis) for every port of a call or slot box."""
    pairs = []
    for p, u in zip(sig.inputs, box.inputs):
        pairs.extend(zip(p.axes, u.axes))
    for p, w in zip(sig.outputs, box.outputs):
        pairs.extend(zip(p.axes, diagram.wires[w].axes))
    return pairs


def _check_composite(diagram: Diagram, box, shapes: Shapes, stack: tuple[str, ...],
                     memo: Memo) -> None:
    sizes = shapes.sizes
    program: Program | None = diagram.program
    if box.op == "slot":
        sig = program.slots[box.attr("slot")]
        groups: dict[str, list[str]] = {}
        for a, b in _port_binding(sig, box, diagram):
            groups.setdefault(a, []).append(b)
        for members in groups.values():
            for m in members[1:]:
                sizes.unify(members[0], m, box.loc)
        return
    name = box.attr("anatomy")
    callee = program.anatomies[name]
    if name in stack or name == diagram.name:
        raise AnatError(f"anatomy {name} uses itself", box.loc,
                        hint="composite boxes must not be recursive")
    pairs = _port_binding(callee.signature, box, diagram)
    overrides = dict(box.attr("dims") or ())
    for a, b in pairs:
        n = sizes.get(b)
        if a in callee.dims and n is not None and overrides.setdefault(a, n) != n:
            raise AnatError(f"{name}: dim {a} is given as {overrides[a]} but its input "
                            f"has {a} = {n}", box.loc)
    key = (id(callee), tuple(sorted(overrides.items())))
    try:
        # a callee that checked once has no cycle through this stack (it would have met it)
        inner = memo.get(key) or check(callee, overrides, stack + (diagram.name,), memo)
    except AnatError as e:
        if e.loc is not None and e.loc.line:
            raise AnatError(e.message, e.loc, e.hint,
                            e.related + [(box.loc, f"in the call of {name} here")]) from None
        # an error without a place of its own (e.g. `f(x, nodim=3)`): the call is the place
        raise AnatError(e.message, box.loc, e.hint, e.related) from None
    memo[key] = shapes.callees[box.id] = inner
    classes: dict[str, str] = {}
    for a, b in pairs:
        n = inner.size(a)
        if n is not None:
            sizes.fix(b, n, box.loc)
        root = inner.sizes.find(a)
        if root in classes:
            sizes.unify(classes[root], b, box.loc)
        else:
            classes[root] = b


def check_program(program: Program, overrides: dict[str, int], strict: bool = True) -> None:
    """Check every anatomy of the program's own file (and the slots they fill) with the
    overrides that each declares. `strict`: a dim no anatomy declares is an error."""
    if strict:
        unknown = [k for k in overrides if not any(k in d.dims for d in program)]
        if unknown:
            from .errors import did_you_mean
            known = {k for d in program for k in d.dims}
            raise AnatError(f"`{unknown[0]}` is not a dim of any anatomy in {program.file}",
                            hint=did_you_mean(unknown[0], known, "dim"))
    memo: Memo = {}
    for d in program:
        own = {k: v for k, v in overrides.items() if k in d.dims}
        d = program.anatomies[d.name] = replace(d, shapes=check(d, own, _memo=memo))
        if d.fills is not None:
            check_fill(program, d)


def check_fill(program: Program, d: Diagram) -> None:
    """An anatomy that says `fills S` must match slot S's interface up to axis renaming."""
    from .errors import did_you_mean
    if d.fills not in program.slots:
        raise AnatError(f"{d.name} fills unknown slot `{d.fills}`", d.loc,
                        hint=did_you_mean(d.fills, program.slots, "slot"))
    iface = program.slots[d.fills]
    ports = [(iface.inputs, d.inputs, "input"), (iface.outputs, d.outputs, "output")]
    forward: dict[str, str] = {}
    backward: dict[str, str] = {}
    for want, have, kind in ports:
        if len(want) != len(have):
            raise AnatError(f"{d.name} has {len(have)} {kind}s but slot {d.fills} has "
                            f"{len(want)}: {iface}", d.loc)
        for w, h in zip(want, have):
            if len(w.axes) != len(h.axes):
                raise AnatError(f"{kind} `{h.name}` of {d.name} has {len(h.axes)} axes but slot "
                                f"{d.fills} wants {len(w.axes)}: {iface}", h.loc)
            for a, b in zip(w.axes, h.axes):
                if forward.setdefault(a, b) != b or backward.setdefault(b, a) != a:
                    raise AnatError(f"{d.name} does not match slot {d.fills}: axis {a} of the "
                                    f"slot is {forward[a]} in one port and {b} in another",
                                    h.loc, hint=f"the slot's interface is {iface}")
