"""The built-in boxes of the language: one contract per op.

This table is the single place that says which names are boxes and what each one means
apart from torch. An op's `OpSpec` carries its arguments and options, its component kind,
its output axes and the checks on its inputs (`infer`, raising located errors), its checks
on sizes (`sizes`), which of its attributes name axes (`axis_attrs`), which axis arguments
have one size (`tied`), the parameters it makes for itself (`affine`), how an output entry
depends on positions along its axes (`causal`, `zero_preserving`: read by
anatomy.causality) and its title in pictures (`title`). The parser, printer, shape checker,
rewrite rules, causality analysis and renderer ask the spec; adding an op means its spec
here, its torch lowering (lowering/graph.py; lowering/recurrent.py for a step form of its
own) and, for certificates, its meaning in anatomy/verify/symbolic.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from math import prod
from typing import Any, NoReturn

from .errors import UNKNOWN, AnatError, SourceLoc

Axes = tuple[str, ...]

# Component kinds (one colour each when drawn).
KINDS = ("input", "parameter", "projection", "similarity", "mask", "normaliser", "mixing",
         "gate", "norm", "activation", "position", "structure", "sharing", "arithmetic",
         "composite", "slot")


@dataclass(frozen=True)
class OpCall:
    """One use of a built-in box, as its contract sees it: the axes of its tensor inputs
    (positional ones, then tensor options such as softmax's mask=), its axis arguments
    (`along`), its options, the statement's target axes (`expected`; None when the box is
    nested in an expression) and where it is written."""

    spec: OpSpec
    ins: tuple[Axes, ...]
    along: Axes = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)
    expected: Axes | None = None
    loc: SourceLoc = UNKNOWN

    def fail(self, message: str, hint: str | None = None, usage: bool = True) -> NoReturn:
        raise AnatError(message, self.loc, hint=hint if hint is not None or not usage
                        else usage_of(self.spec))

    def need(self, axis: str, i: int, role: str) -> None:
        """Input i must have `axis`: `softmax works along s, but its input has [t, d]`."""
        if axis not in self.ins[i]:
            self.fail(f"{self.spec.name} {role} `{axis}`, but its input has axes "
                      f"[{', '.join(self.ins[i])}]")

    def target(self, example: str) -> Axes:
        """The statement's target axes, for a box whose output axes are the target's."""
        if self.expected is None:
            self.fail(f"{self.spec.name} takes its axes from its target: write it as "
                      f"`{example}`", usage=False)
        return self.expected


@dataclass(frozen=True)
class SizeCall:
    """A box's size check, once the shape checker has unified every axis: `sizes.get(a)`
    (None: not known at these dims) and `sizes.fix(a, n, loc)` infer a missing size."""

    op: str
    attrs: Mapping[str, Any]
    sizes: Any  # anatomy.shapes._Sizes
    loc: SourceLoc = UNKNOWN

    def fail(self, message: str, hint: str | None = None) -> NoReturn:
        raise AnatError(message, self.loc, hint=hint)


CAUSAL_FACTS = frozenset({"pointwise", "same_position", "mask", "decay_mask", "recurrence",
                          "reverse", "shift", "normaliser", "norm", "sum", "none", "length",
                          "attention"})


def _first(c: OpCall) -> Axes:
    """Elementwise: the first input's axes."""
    return c.ins[0]


@dataclass(frozen=True)
class OpSpec:
    """The contract of one op (see the module docstring).

    `infer(call)` checks a use of the op and gives its output axes; `needs_target`: the
    output axes are the statement's target's (a nested use has none to give); `sizes`:
    its checks that need sizes (run by the shape checker). `causal` (one of CAUSAL_FACTS,
    read by anatomy.causality) says how an entry depends on positions along its axes:

    - "pointwise": the same index of its inputs; "same_position": the same position along
      time (rope, share), keeping its input's zeros;
    - "mask": a 0/1 matrix over (query, key), 1 inside `MASK_BANDS[op]` (it looks ahead
      when its band reaches below 0); "decay_mask": a matrix from log-decays read at
      positions between key and query, 0 above the diagonal;
    - "recurrence": position i reads positions <= i along its axis (scan, ssd, delta_rule);
    - "reverse": position i reads n - 1 - i (flip); "shift": position i reads i - by;
    - "normaliser": reads its whole row along its axis; "norm": reads all its axes;
    - "attention": sums over its key axis, bounded by the query axis when causal;
    - "sum": sums the input axes its output lacks (linear, concat, split, reshape);
    - "none": reads no position (index); "length": the sequence's length (size).
    """

    name: str
    kind: str
    doc: str
    tensors: int = 1            # positional wire arguments; -1: one or more
    axes: tuple[str, ...] = ()  # positional axis arguments after the tensors; "*" suffix: 1+
    options: dict[str, Any] = field(default_factory=dict)  # keyword options with defaults
    tensor_options: tuple[str, ...] = ()  # keyword options that take a wire (e.g. mask=)
    infer: Callable[[OpCall], Axes] = _first
    needs_target: bool = False
    axis_attrs: tuple[str, ...] | None = None  # None: ("along",) when it takes axes
    tied: bool = False          # its two axis arguments have one size (query and key)
    causal: str = "pointwise"
    zero_preserving: bool = False  # f(0) = 0 entrywise (a mask's zeros survive it)
    title: Callable[[Axes, Mapping[str, Any]], str] | None = None
    passes_target: bool = False  # nested, it passes its statement's target axes down
    sizes: Callable[[SizeCall], None] | None = None  # size checks once sizes are known
    # the learned parameters a box makes for itself with affine=true (a norm's `scale_y`,
    # `shift_y`), in input order after its tensors, and whether they run over its axis
    # arguments reversed (groupnorm's [group, axis])
    affine: tuple[str, ...] = ()
    affine_reversed: bool = False

    def __post_init__(self):
        assert self.causal in CAUSAL_FACTS, (self.name, self.causal)
        if self.axis_attrs is None:
            object.__setattr__(self, "axis_attrs", ("along",) if self.axes else ())

    def out_axes(self, ins: tuple[Axes, ...], along: Axes = (),
                 attrs: Mapping[str, Any] | None = None, expected: Axes | None = None,
                 loc: SourceLoc = UNKNOWN) -> Axes:
        """The output axes of this op on inputs with these axes (checked: AnatError)."""
        return self.infer(OpCall(self, tuple(ins), tuple(along), attrs or {}, expected, loc))

    def picture_title(self, along: Axes, attrs: Mapping[str, Any]) -> str:
        """What a box of this op does, in a few characters: `softmax over s`."""
        if self.title is not None:
            return self.title(along, attrs)
        if len(along) > 1:
            return f"{self.name} ({', '.join(along)})"
        if along:
            return f"{self.name} {along[0]}"
        return f"{self.name} {attrs['axis']}" if attrs.get("axis") else self.name


def usage_of(spec: OpSpec) -> str:
    """`softmax(x, axis, mask=m): softmax over an axis; ...`: the hint of a misused op."""
    args = (["x"] * max(spec.tensors, 0) if spec.tensors != -1 else ["a", "b"]) + \
        [a.rstrip("*") for a in spec.axes]
    opts = [f"{k}={_show(v)}" for k, v in spec.options.items() if v is not None]
    opts += [f"{k}=m" for k in spec.tensor_options]
    return f"{spec.name}({', '.join(args + opts)}): {spec.doc}"


def _show(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _union(*axes_lists: Axes) -> Axes:
    out: list[str] = []
    for axes in axes_lists:
        out.extend(a for a in axes if a not in out)
    return tuple(out)


# -- output axes and checks, one function per op ------------------------------------------------
def _along_one(c: OpCall) -> Axes:
    """softmax, normalise, l2normalise, shift, flip: along an axis of the input; a mask
    (softmax's mask=) has no axis the scores lack."""
    c.need(c.along[0], 0, "works along")
    for m in c.ins[1:]:
        extra = [a for a in m if a not in c.ins[0]]
        if extra:
            c.fail(f"the mask has axis {extra[0]} that the scores lack", usage=False)
    return c.ins[0]


def _norm(c: OpCall) -> Axes:
    for a in c.along:
        c.need(a, 0, "normalises over")
    return c.ins[0]


def _mask(c: OpCall) -> Axes:
    """causal, window, full: a [query, key] matrix."""
    name = c.spec.name
    if c.along[0] == c.along[1]:
        c.fail(f"{name} needs two different axes (query, key)", hint=f"e.g. {name}(t, s)")
    if name == "window" and c.attrs.get("size", 0) <= 0:
        c.fail("window needs size=N with N >= 1", hint="e.g. window(t, s, size=128)")
    return c.along


def _decay(c: OpCall) -> Axes:
    """The key axis after the query axis; a log-decay without the query axis is constant
    (gamma^(t - s), as in retention): (query, key) before its axes."""
    (x,), (q, k) = c.ins[:1], c.along
    if q not in x:
        if k in x:
            c.fail(f"decay's input has the key axis `{k}`")
        return (q, k) + x
    if k in x:
        c.fail(f"decay adds the key axis `{k}`, which its input already has")
    i = x.index(q)
    return x[:i + 1] + (k,) + x[i + 1:]


def _scan(c: OpCall) -> Axes:
    c.need(c.along[0], 0, "runs along")
    return _union(c.ins[0], c.ins[1])


def _ssd(c: OpCall) -> Axes:
    expected = c.target("y[t, h, p] = ssd(q, k, v, log_a, t)")
    for i, role in enumerate(("q", "k", "v")):
        if c.ins[i]:
            c.need(c.along[0], i, f"reads its {role} along")
    if c.attrs.get("chunk", 64) < 1:
        c.fail("ssd needs chunk=N with N >= 1")
    q, k = c.ins[0], c.ins[1]
    lone = [a for a in q + k if a not in expected and not (a in q and a in k)]
    if lone:
        c.fail(f"ssd sums axis {lone[0]}, which only one of q and k has",
               hint="summed (state) axes are shared by q and k")
    have = _union(*c.ins)
    missing = [a for a in expected if a not in have]
    if missing:
        c.fail(f"axis {missing[0]} is on the left but not on the right "
               f"(the right has [{', '.join(have)}])",
               hint="axes on the left must come from the right; axes only on the right "
                    "are summed")
    return expected


def _ssd_bonus(c: OpCall) -> Axes:
    """`y[t, h, p] = ssd_bonus(q, k, v, log_a, u, t)`: ssd's inputs, then the bonus u
    [heads?, state?] (no time axis)."""
    expected = _ssd(c)
    if c.along[0] in c.ins[4]:
        c.fail(f"ssd_bonus's bonus is the same at every step: it has no axis `{c.along[0]}`")
    return expected


def _delta_rule(c: OpCall) -> Axes:
    """`o[t, h, p] = delta_rule(q, k, v, beta, log_a, t)`: q, k [t, heads, state],
    v [t, heads, values], beta [t, heads], log_a a number or [t?, heads, state?]."""
    expected = c.target("o[t, h, p] = delta_rule(q, k, v, beta, log_a, t)")
    t = c.along[0]
    q, k, v, beta, log_a = c.ins
    for role, axes in (("q", q), ("k", k), ("v", v), ("beta", beta)):
        if t not in axes:
            c.fail(f"delta_rule reads its {role} along `{t}`, but {role} has axes "
                   f"[{', '.join(axes)}]")
    if t not in expected:
        c.fail(f"the target of delta_rule must keep the axis `{t}`", usage=False)
    if set(q) != set(k):
        c.fail(f"delta_rule's q [{', '.join(q)}] and k [{', '.join(k)}] must have the same "
               "axes: k_t k_t^T is a matrix over the state's key axes")
    state = tuple(a for a in k if a not in expected)
    heads = tuple(a for a in expected if a != t and a in k)
    values = tuple(a for a in expected if a != t and a not in k)
    if not state:
        c.fail("delta_rule needs state axes: axes of q and k that the target lacks (e.g. n "
               "in q[t, h, n] with a target o[t, h, p])", usage=False)
    if len(heads) > 1:
        c.fail(f"delta_rule runs one heads axis, but its target has {', '.join(heads)}",
               hint="merge the head axes into one")
    checks = ((v, (t,) + heads + values, "v", "time, heads and the target's value axes"),
              (beta, (t,) + heads, "beta", "time and heads (one step size per token)"),
              (log_a, (t,) + heads + state, "log_a", "time, heads and state axes"))
    for axes, allowed, role, what in checks:
        extra = [a for a in axes if a not in allowed]
        if extra:
            c.fail(f"delta_rule's {role} has axis {extra[0]}; it takes {what}")
    if c.attrs.get("chunk", 64) < 1:
        c.fail("delta_rule needs chunk=N with N >= 1")
    return expected


def attention_roles(ins: tuple[Axes, ...], along: Axes, out: Axes) -> tuple[Axes, Axes, Axes]:
    """(heads, state, values) of `out = attention(q, k, v, ..., t, s)`: heads are the
    target's axes (but t) that q or k has; state: the axes q and k share that the target
    lacks (summed by the score); values: the target's other axes."""
    q, k = ins[0], ins[1]
    t, s = along
    heads = tuple(a for a in out if a != t and (a in q or a in k))
    state = tuple(a for a in q if a in k and a not in out and a not in (t, s))
    values = tuple(a for a in out if a != t and a not in heads)
    return heads, state, values


def _attention(c: OpCall) -> Axes:
    """`y[t, h, p] = attention(q, k[s, h, n], v[s, h, p], t, s)`: q [t, heads, state],
    k [s, heads, state], v [s, heads, values]; further inputs (made by the rewrite rule
    `fuse_attention`) are the scale's numbers and the leaves of the score expression."""
    expected = c.target("y[t, h, p] = attention(q, k[s, h, n], v[s, h, p], t, s)")
    t, s = c.along
    if t == s:
        c.fail("attention needs two different axes (query, key)")
    q, k, v = c.ins[:3]
    heads, state, values = attention_roles(c.ins, c.along, expected)
    if t not in expected or s in expected:
        c.fail(f"the target of attention keeps the query axis `{t}` and sums the key axis "
               f"`{s}`", usage=False)
    for role, axes, pos, other in (("q", q, t, s), ("k", k, s, t), ("v", v, s, t)):
        if pos not in axes or other in axes:
            c.fail(f"attention reads its {role} along `{pos}` (not `{other}`), but {role} "
                   f"has axes [{', '.join(axes)}]")
    for role, axes, allowed in (("q", q, heads + state + (t,)), ("k", k, heads + state + (s,)),
                                ("v", v, heads + values + (s,))):
        extra = [a for a in axes if a not in allowed]
        if extra:
            c.fail(f"attention's {role} has axis {extra[0]}, which is neither a head, a "
                   f"summed feature axis nor its time axis")
    for axes in c.ins[3:]:
        extra = [a for a in axes if a not in heads + (t, s)]
        if extra:
            c.fail(f"a leaf of attention's score has axis {extra[0]}; leaves are read by "
                   f"head, query and key", usage=False)
    if c.attrs.get("window", 0) < 0:
        c.fail("attention needs window=N with N >= 1 (0: no window)")
    return expected


def _rotary(c: OpCall) -> Axes:
    c.need(c.along[0], 0, "reads positions along")
    c.need(c.along[1], 0, "rotates pairs along")
    return c.ins[0]


def _share(c: OpCall) -> Axes:
    g, h = c.along
    c.need(g, 0, "shares groups along")
    if h in c.ins[0]:
        c.fail(f"share makes the heads axis `{h}`, which its input already has")
    return tuple(h if a == g else a for a in c.ins[0])


def _index(c: OpCall) -> Axes:
    return (c.attrs.get("axis") or c.along[0],)


def _scalar(c: OpCall) -> Axes:
    return ()


def _concat(c: OpCall) -> Axes:
    if c.expected is None:
        c.fail("concat takes its axes from its target: write it as "
               "`c[t, k] = concat(a, b)`", usage=False)
    expected = c.expected
    for axes in c.ins:
        own = [a for a in axes if a not in expected]
        if len(own) != 1:
            c.fail("each input of concat must have exactly one axis that the target lacks; "
                   f"one has [{', '.join(own)}]", usage=False)
    new = [a for a in expected if all(a not in axes for axes in c.ins)]
    if len(new) != 1:
        c.fail("the target of concat must have exactly one axis that no input has (the "
               "joined axis)", usage=False)
    return expected


def _reshape(c: OpCall) -> Axes:
    """x's axes the target lacks are merged (row-major, in x's order) and split into the
    target's axes x lacks (in its order); attrs may say which axis is time."""
    if c.expected is None:
        c.fail("reshape takes its axes from its target: write it as "
               "`q[t, h, p] = reshape(x)`", usage=False)
    x, expected = c.ins[0], c.expected
    merge = tuple(a for a in x if a not in expected)
    into = tuple(a for a in expected if a not in x)
    if not merge or not into:
        c.fail(f"reshape has nothing to reshape: its input [{', '.join(x)}] and its target "
               f"[{', '.join(expected)}] have the same axes",
               hint="reshape replaces axes: e.g. `q[t, h, p] = reshape(x)` for x[t, d]; a "
                    "target in another order is a plain `q[...] = x`")
    time = c.attrs.get("time")
    if time is not None and (time in merge or time in into):
        c.fail(f"reshape would merge or split the time axis `{time}`",
               hint="reshape feature axes; keep the time axis on both sides")
    return expected


def _linear(c: OpCall) -> Axes:
    """The input's axes it does not map, then the axes it maps to."""
    in_axes, out_axes = c.attrs["in_axes"], c.attrs["out_axes"]
    return tuple(a for a in c.ins[0] if a not in in_axes) + tuple(out_axes)


# -- size checks, once the shape checker knows every size it can --------------------------------
def _share_sizes(c: SizeCall) -> None:
    g, h = c.attrs["along"]
    ng, nh = c.sizes.get(g), c.sizes.get(h)
    if ng is not None and nh is not None and nh % ng:
        c.fail(f"share: {nh} heads ({h}) cannot be split into {ng} groups ({g})",
               hint="the number of heads must be a multiple of groups")


def _rotary_sizes(c: SizeCall) -> None:
    axis = c.attrs["along"][1]
    n = c.sizes.get(axis)
    if n is not None and n % 2:
        c.fail(f"{c.op} rotates pairs, but axis {axis} has odd size {n}")


def _parts_sizes(c: SizeCall) -> None:
    """concat and split: the joined axis is as long as its parts; one unknown is inferred."""
    sizes = c.sizes
    whole, parts = c.attrs["axis"], c.attrs["parts"]
    known = [sizes.get(p) for p in parts]
    if all(k is not None for k in known):
        sizes.fix(whole, sum(known), c.loc)
    elif sizes.get(whole) is not None and sum(k is None for k in known) == 1:
        missing = parts[[k is None for k in known].index(True)]
        rest = sizes.get(whole) - sum(k for k in known if k is not None)
        if rest <= 0:
            c.fail(f"{c.op}: no room for axis {missing}")
        sizes.fix(missing, rest, c.loc)


def _reshape_sizes(c: SizeCall) -> None:
    """The merged axes and the axes they are split into hold as many entries; a single
    unknown size on either side is inferred."""
    sizes = c.sizes
    sides = (c.attrs["merge"], c.attrs["into"])
    for side, other in (sides, sides[::-1]):
        unknown = [a for a in side if sizes.get(a) is None]
        if len(unknown) == 1 and all(sizes.get(a) is not None for a in other):
            known = prod(sizes.get(a) for a in side if a != unknown[0])
            total = prod(sizes.get(a) for a in other)
            if total % known:
                c.fail(f"reshape: {total} entries of [{', '.join(other)}] do not split into "
                       f"[{', '.join(side)}]")
            sizes.fix(unknown[0], total // known, c.loc)
    merge, into = (prod(sizes.get(a) for a in side) if all(sizes.get(a) for a in side)
                   else None for side in sides)
    if merge is not None and into is not None and merge != into:
        def show(side):
            return ", ".join(f"{a}={sizes.get(a)}" for a in side)
        c.fail(f"reshape: [{show(sides[0])}] has {merge} entries but [{show(sides[1])}] has "
               f"{into}", hint="the merged axes and the target's new axes must hold as many "
                               "entries")


def _over(name: str) -> Callable[[Axes, Mapping[str, Any]], str]:
    def title(along: Axes, attrs) -> str:
        return f"{name} over {', '.join(along)}"
    return title


INF = float("inf")


def _band(lo: float, hi: float | None = None):
    """A mask's band: it is 1 where lo <= query - key <= hi (the key never after the
    query when lo >= 0: the mask does not look ahead)."""
    return lambda attrs: (lo, INF if hi is None else hi)


def _unary(name: str, kind: str, doc: str, zero: bool = False) -> OpSpec:
    return OpSpec(name, kind, doc, zero_preserving=zero, passes_target=True)


OPS: dict[str, OpSpec] = {op.name: op for op in [
    # elementwise nonlinearities
    _unary("exp", "activation", "e^x, elementwise"),
    _unary("log", "activation", "natural logarithm, elementwise"),
    _unary("sqrt", "activation", "square root, elementwise", zero=True),
    _unary("abs", "activation", "absolute value, elementwise", zero=True),
    _unary("tanh", "activation", "hyperbolic tangent, elementwise", zero=True),
    _unary("relu", "activation", "max(x, 0), elementwise", zero=True),
    _unary("elu", "activation", "ELU (alpha = 1), elementwise", zero=True),
    _unary("gelu", "activation", "GeLU (exact, erf form), elementwise", zero=True),
    _unary("softplus", "activation", "log(1 + e^x), elementwise"),
    _unary("sigmoid", "gate", "1 / (1 + e^-x), elementwise"),
    _unary("silu", "gate", "x * sigmoid(x) (swish), elementwise", zero=True),
    # normalisers over an axis
    OpSpec("softmax", "normaliser", "softmax over an axis; mask= (0/1) sets masked scores to -inf",
           axes=("axis",), tensor_options=("mask",), infer=_along_one, causal="normaliser",
           title=_over("softmax")),
    OpSpec("normalise", "normaliser", "x / sum of x over an axis (sum-normalised)",
           axes=("axis",), options={"eps": 0.0}, infer=_along_one, causal="normaliser",
           title=_over("normalise")),
    OpSpec("l2normalise", "normaliser", "x / ||x||_2 over an axis", axes=("axis",),
           options={"eps": 1e-6}, infer=_along_one, causal="normaliser",
           title=_over("l2normalise")),
    # norms (learned affine parameters named after the target wire)
    OpSpec("layernorm", "norm", "layer norm over the given axes", axes=("axes*",),
           options={"eps": 1e-5, "affine": True}, infer=_norm, causal="norm",
           title=_over("layernorm"), passes_target=True, affine=("scale", "shift")),
    OpSpec("rmsnorm", "norm", "RMS norm over the given axes", axes=("axes*",),
           options={"eps": 1e-5, "affine": True}, infer=_norm, causal="norm",
           title=_over("rmsnorm"), passes_target=True, affine=("scale",)),
    OpSpec("groupnorm", "norm",
           "norm over `axis` separately for each index of `group`, affine over both",
           axes=("axis", "group"), options={"eps": 1e-5, "affine": True}, infer=_norm,
           causal="norm", title=_over("groupnorm"), passes_target=True,
           affine=("scale", "shift"), affine_reversed=True),
    # masks and decays: [t, s] matrices
    OpSpec("causal", "mask", "1 where s <= t, else 0", tensors=0, axes=("query", "key"),
           infer=_mask, tied=True, causal="mask"),
    OpSpec("window", "mask", "1 where 0 <= t - s < size (sliding window), else 0", tensors=0,
           axes=("query", "key"), options={"size": 0}, infer=_mask, tied=True, causal="mask",
           title=lambda along, attrs: f"window {attrs.get('size')} ({', '.join(along)})"),
    OpSpec("full", "mask", "all ones: no mask (bidirectional)", tensors=0,
           axes=("query", "key"), infer=_mask, tied=True, causal="mask"),
    OpSpec("decay", "mask",
           "exp(sum_{i=s+1..t} log_a_i) for s <= t else 0, from log-decays (log-space "
           "segment sum); a log-decay without the query axis is constant: exp((t-s) log_a)",
           axes=("query", "key"), infer=_decay, tied=True, causal="decay_mask"),
    # sequence structure
    OpSpec("shift", "structure", "move one step later along an axis (zero at the start)",
           axes=("axis",), options={"by": 1}, infer=_along_one, causal="shift",
           passes_target=True,
           title=lambda along, attrs: f"shift {along[0]} by {attrs['by']}"
           if attrs.get("by", 1) != 1 else f"shift {along[0]}"),
    OpSpec("flip", "structure", "reverse along an axis", axes=("axis",), infer=_along_one,
           causal="reverse", passes_target=True),
    OpSpec("rope", "position", "rotary position encoding of pairs of `feature` by position",
           axes=("position", "feature"), options={"base": 10000.0}, infer=_rotary,
           causal="same_position", passes_target=True, sizes=_rotary_sizes),
    OpSpec("xpos", "position",
           "rotary encoding with xPos scaling (downscale=true for keys)",
           axes=("position", "feature"),
           options={"base": 10000.0, "scale_base": 512.0, "downscale": False}, infer=_rotary,
           causal="same_position", passes_target=True, sizes=_rotary_sizes),
    OpSpec("concat", "structure", "concatenate along one axis (taken from the target)",
           tensors=-1, infer=_concat, needs_target=True, axis_attrs=("axis", "parts"),
           causal="sum", sizes=_parts_sizes),
    OpSpec("split", "structure", "split one axis into the targets' axes", tensors=1,
           needs_target=True, axis_attrs=("axis", "parts"), causal="sum", sizes=_parts_sizes),
    # forms of masked linear attention that the rewrite engine derives (anatomy.rewrite)
    OpSpec("scan", "mixing",
           "the linear recurrence S_t = exp(log_a_t) S_{t-1} + u_t along an axis (S_-1 = 0): "
           "sum_{s<=t} exp(sum_{i=s+1..t} log_a_i) u_s, the recurrent form of a decay mask",
           tensors=2, axes=("axis",), infer=_scan, causal="recurrence",
           title=_over("scan")),
    OpSpec("ssd", "mixing",
           "y_t = sum_{s<=t} exp(sum_{i=s+1..t} log_a_i) (q_t . k_s) v_s evaluated chunk by "
           "chunk (Mamba-2's SSD algorithm); q, k and v are all given along the time axis; the "
           "axes of q and k that the target lacks are summed (the state); a log_a with state "
           "axes decays each key channel on its own (gated linear attention's kernel)",
           tensors=4, axes=("axis",), options={"chunk": 64}, infer=_ssd, needs_target=True,
           causal="recurrence", title=_over("ssd")),
    OpSpec("ssd_bonus", "mixing",
           "RWKV-6's read-out: y_t = q_t S_{t-1} + (q_t * u * k_t) . v_t with S_t = "
           "diag(exp(log_a_t)) S_{t-1} + k_t v_t^T, S_-1 = 0 (the state before the step plus "
           "a bonus u for the current token), chunk by chunk; the rewrite rule fuse_bonus "
           "makes it from ssd over shifted keys, values and log-decays plus (q * u * k) v",
           tensors=5, axes=("axis",), options={"chunk": 64}, infer=_ssd_bonus,
           needs_target=True, causal="recurrence", title=_over("ssd_bonus")),
    OpSpec("delta_rule", "mixing",
           "the delta rule along an axis: o_t = q_t S_t, S_t = (I - beta_t k_t k_t^T) "
           "diag(exp(log_a_t)) S_{t-1} + beta_t k_t v_t^T, S_-1 = 0 (DeltaNet with log_a = 0, "
           "Gated DeltaNet with log_a per head, KDA with log_a per key channel); the axes of "
           "q and k that the target lacks are the state's key axes",
           tensors=5, axes=("axis",), options={"chunk": 64}, infer=_delta_rule,
           needs_target=True, causal="recurrence", title=_over("delta_rule")),
    OpSpec("attention", "mixing",
           "fused softmax attention: y[t] = sum_s softmax_s(expr(scale q_t . k_s) + mask) v_s "
           "(scaled_dot_product_attention or FlexAttention); the rewrite rule "
           "fuse_attention makes it from softmax(q . k) * v, with a score expression of "
           "positions, per-token log-decays and per-head values (attribute `expr`), and "
           "causal=true / window=N masks",
           tensors=3, axes=("query", "key"),
           options={"causal": False, "window": 0, "scale": 1.0}, infer=_attention,
           needs_target=True, tied=True, causal="attention",
           title=lambda along, attrs: "attention over " + along[1]
           + (" (causal)" if attrs.get("causal") else "")),
    OpSpec("reshape", "structure",
           "merge the input's axes the target lacks, row-major, into the target's axes the "
           "input lacks (e.g. [t, d] -> [t, h, p])", tensors=1, infer=_reshape,
           needs_target=True, axis_attrs=("merge", "into"), causal="sum",
           sizes=_reshape_sizes),
    OpSpec("share", "sharing",
           "KV sharing: groups axis g broadcast to heads axis h (head i uses group i // (H/G))",
           axes=("groups", "heads"), infer=_share, causal="same_position", sizes=_share_sizes,
           title=lambda along, attrs: f"share {along[0]}→{along[1]}"),
    OpSpec("index", "structure", "0, 1, ..., n-1 along an axis", tensors=0, axes=("axis",),
           infer=_index, axis_attrs=("axis",), causal="none"),
    OpSpec("size", "structure", "the size of an axis, as a scalar", tensors=0, axes=("axis",),
           infer=_scalar, axis_attrs=("axis",), causal="length"),
    # projections
    OpSpec("linear", "projection",
           "a learned linear map: a parameter box and a contraction (sugar)",
           options={"in_axes": None, "out_axes": None, "bias": False, "name": None,
                    "init": None}, infer=_linear, axis_attrs=("in_axes", "out_axes"),
           causal="sum"),
]}

# Bands of the 0/1 masks: 1 where lo <= query - key <= hi (anatomy.causality).
MASK_BANDS: dict[str, Callable[[Mapping[str, Any]], tuple[float, float]]] = {
    "causal": _band(0),
    "window": lambda attrs: (0, attrs.get("size", 0) - 1),
    "full": _band(-INF),
}

# The initialiser of each role of a box's own affine parameters (OpSpec.affine).
AFFINE_INIT = {"scale": ("ones",), "shift": ("zeros",)}

# Boxes the parser makes from operators and statements rather than from calls.
STRUCTURAL = {
    "param": "parameter",     # a learned tensor
    "const": "arithmetic",    # a number
    "contract": "mixing",     # Einstein product: multiply factors, sum the axes not kept
    "add": "arithmetic", "sub": "arithmetic", "div": "arithmetic", "pow": "arithmetic",
    "neg": "arithmetic",
    "call": "composite",      # another anatomy used as a box
    "slot": "slot",           # an open component, filled by an anatomy that `fills` it
}

# Keyword spellings accepted in the language for the options above.
OPTION_SPELLING = {"in": "in_axes", "out": "out_axes"}

# Parameter initialisers: name -> number of numeric arguments allowed.
INITS = {
    "zeros": (0,), "ones": (0,), "constant": (1,),
    "normal": (0, 1, 2),             # std, or mean and std (default std 0.02)
    "uniform": (2,),                 # lo, hi
    "log_uniform": (2,),             # log of U(lo, hi): Mamba-2's A_log
    "inv_softplus_log_uniform": (2,),  # softplus^-1 of logU(lo, hi): Mamba-2's dt_bias
    "fan_in": (0,),                  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = first axes
}


def ssd_state(q: tuple[str, ...], k: tuple[str, ...], out: tuple[str, ...]) -> tuple[str, ...]:
    """The state (summed) axes of `out = ssd(q, k, v, log_a, t)`: those of q and k that the
    target lacks, as for any Einstein product."""
    return tuple(a for a in q if a in k and a not in out)


def keeps_axes(op: str) -> bool:
    """Boxes whose output has their first input's axes; nested in a statement, they pass
    the statement's target axes down to their argument (so `rope(linear(x), t, r)` works)."""
    return op in OPS and OPS[op].passes_target


def axis_attrs(op: str) -> tuple[str, ...]:
    """The attributes of a box of this op whose values name axes (renamed with them)."""
    return OPS[op].axis_attrs if op in OPS else ()


def kind_of(op: str) -> str:
    if op in OPS:
        return OPS[op].kind
    return STRUCTURAL.get(op, "arithmetic")
