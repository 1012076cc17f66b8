"""A symbolic interpreter of diagrams, for certifying rules: every input and parameter entry
is a sympy symbol, every box is evaluated from its definition (written here from the papers'
equations, independently of the torch lowering), and two diagrams are equal when every
output entry of their difference simplifies to zero.

Sizes are small (sequence length 3 or 4, features 2): enough for the identities to show
their structure, small enough for sympy. Boxes without a definition here (norms, rotary
encodings) raise `Unsupported`.
"""

from __future__ import annotations

import random
from itertools import product

import numpy as np
import sympy

from anatomy.ir import Box, Diagram, Use

from . import symbolic_attention, symbolic_delta


class Unsupported(Exception):
    """A box this interpreter has no definition for."""


class Value:
    """An object array of sympy expressions with named axes (None: a scalar)."""

    def __init__(self, arr, axes: tuple[str, ...]):
        self.arr, self.axes = arr, axes

    def aligned(self, target: tuple[str, ...]):
        """The array laid out along `target` (missing axes of size 1, to broadcast)."""
        if not self.axes:
            return self.arr
        perm = [self.axes.index(a) for a in target if a in self.axes]
        arr = np.transpose(self.arr, perm) if perm != list(range(len(perm))) else self.arr
        shape = [arr.shape[perm.index(self.axes.index(a))] if a in self.axes else 1
                 for a in target]
        return arr.reshape(shape)


_UNARY = {
    "exp": sympy.exp, "sqrt": sympy.sqrt, "abs": sympy.Abs,
    "log": lambda x: -sympy.oo if x == 0 else sympy.log(x),  # as in torch: log 0 = -inf
    "tanh": sympy.tanh, "relu": lambda x: sympy.Max(0, x),
    "elu": lambda x: sympy.Piecewise((x, x > 0), (sympy.exp(x) - 1, True)),
    "gelu": lambda x: x / 2 * (1 + sympy.erf(x / sympy.sqrt(2))),
    "softplus": lambda x: sympy.log(1 + sympy.exp(x)),
    "sigmoid": lambda x: 1 / (1 + sympy.exp(-x)),
    "silu": lambda x: x / (1 + sympy.exp(-x)),
}


class Interpreter:
    """Evaluates one diagram on symbolic inputs; parameters are symbols named by wire."""

    def __init__(self, d: Diagram, length: int, shapes=None,
                 bound: dict[str, int] | None = None):
        self.d, self.length = d, length
        self.shapes = shapes or d.shapes
        self.bound = bound or {}  # sizes a caller gives (by axis class)
        self.vals: dict[str, Value] = {}

    def size(self, axis: str) -> int:
        n = self.shapes.size(axis)
        if n is None:
            n = self.bound.get(self.shapes.sizes.find(axis))
        return n if n is not None else self.length

    def symbols(self, name: str, axes: tuple[str, ...]) -> Value:
        shape = tuple(self.size(a) for a in axes)
        flat = [sympy.Symbol(f"{name}_{i}", real=True) for i in range(int(np.prod(shape)))]
        return Value(np.array(flat, dtype=object).reshape(shape), axes)

    def run(self, inputs: dict[str, Value] | None = None) -> dict[str, Value]:
        for p in self.d.inputs:
            self.vals[p.name] = (inputs or {}).get(p.name) or self.symbols(p.name, p.axes)
        for b in self.d.boxes:
            self.box(b)
        return {p.name: self.vals[p.name] for p in self.d.outputs}

    def use(self, u: Use) -> Value:
        v = self.vals[u.wire]
        rename = dict(zip(self.d.wires[u.wire].axes, u.axes))
        return Value(v.arr, tuple(rename[a] for a in v.axes))

    def out(self, b: Box) -> tuple[str, ...]:
        return self.d.wires[b.outputs[0]].axes

    def store(self, b: Box, arr, axes: tuple[str, ...]) -> None:
        """Record a box's output, laid out in its wire's axis order."""
        target = self.out(b)
        if not target:
            self.vals[b.outputs[0]] = Value(arr, ())
            return
        value = Value(np.asarray(arr, dtype=object), axes)
        self.vals[b.outputs[0]] = Value(np.broadcast_to(
            value.aligned(target), tuple(self.size(a) for a in target)).copy(), target)

    # -- boxes --------------------------------------------------------------------------
    def box(self, b: Box) -> None:
        method = getattr(self, f"_{b.op}", None)
        if method is None and b.op in _UNARY:
            x = self.use(b.inputs[0])
            f = np.vectorize(_UNARY[b.op], otypes=[object])
            return self.store(b, f(x.arr) if x.axes else _UNARY[b.op](x.arr), x.axes)
        if method is None:
            raise Unsupported(f"no symbolic definition of `{b.op}`")
        method(b)

    def _call(self, b: Box) -> None:
        callee = self.d.program.anatomies[b.attr("anatomy")]
        shapes = self.shapes.callees[b.id]
        bound = {shapes.sizes.find(a): self.size(c) for p, u in zip(callee.inputs, b.inputs)
                 for a, c in zip(p.axes, u.axes)}
        inner = Interpreter(callee, self.length, shapes, bound)
        inputs = {p.name: Value(self.use(u).arr, p.axes) for p, u in zip(callee.inputs,
                                                                         b.inputs)}
        results = inner.run(inputs)
        for p, w in zip(callee.outputs, b.outputs):
            self.vals[w] = Value(results[p.name].arr, self.d.wires[w].axes)

    def _param(self, b: Box) -> None:
        self.vals[b.outputs[0]] = self.symbols(b.outputs[0], self.out(b))

    def _const(self, b: Box) -> None:
        self.vals[b.outputs[0]] = Value(sympy.nsimplify(b.attr("value")), ())

    def _size(self, b: Box) -> None:
        self.vals[b.outputs[0]] = Value(sympy.Integer(self.size(b.attr("axis"))), ())

    def _index(self, b: Box) -> None:
        axis = b.attr("axis")
        self.store(b, np.array([sympy.Integer(i) for i in range(self.size(axis))],
                               dtype=object), (axis,))

    def elementwise(self, b: Box, fn) -> None:
        vals = [self.use(u) for u in b.inputs]
        axes = self.out(b)
        self.store(b, fn(*(v.aligned(axes) for v in vals)), axes)

    def _neg(self, b: Box) -> None:
        self.elementwise(b, lambda x: -x)

    def _add(self, b: Box) -> None:
        self.elementwise(b, lambda x, y: x + y)

    def _sub(self, b: Box) -> None:
        self.elementwise(b, lambda x, y: x - y)

    def _div(self, b: Box) -> None:
        self.elementwise(b, lambda x, y: x / y)

    def _pow(self, b: Box) -> None:
        self.elementwise(b, lambda x, y: x ** y)

    def _contract(self, b: Box) -> None:
        vals = [self.use(u) for u in b.inputs]
        out = self.out(b)
        every = list(out) + [a for v in vals for a in v.axes if a not in out]
        every = tuple(dict.fromkeys(every))
        prod_ = sympy.Integer(1)
        for v in vals:
            prod_ = prod_ * v.aligned(every)
        prod_ = np.broadcast_to(prod_, tuple(self.size(a) for a in every))
        summed = tuple(range(len(out), len(every)))
        total = prod_.sum(axis=summed) if summed else prod_
        self.store(b, total, out)

    def _linear(self, b: Box) -> None:
        x, w = self.use(b.inputs[0]), self.use(b.inputs[1])
        in_axes, out_axes = b.attr("in_axes"), b.attr("out_axes")
        w = Value(w.arr, in_axes + out_axes)
        kept = tuple(a for a in x.axes if a not in in_axes)
        every = kept + out_axes + in_axes
        total = (x.aligned(every) * w.aligned(every)).sum(
            axis=tuple(range(len(kept + out_axes), len(every))))
        if len(b.inputs) > 2:
            total = total + Value(self.use(b.inputs[2]).arr, out_axes).aligned(kept + out_axes)
        self.store(b, total, kept + out_axes)

    # masks and decays -----------------------------------------------------------------
    def mask(self, b: Box, keep) -> None:
        t, s = b.attr("along")
        arr = np.array([[sympy.Integer(int(keep(i, j))) for j in range(self.size(s))]
                        for i in range(self.size(t))], dtype=object)
        self.store(b, arr, (t, s))

    def _causal(self, b: Box) -> None:
        self.mask(b, lambda i, j: j <= i)

    def _full(self, b: Box) -> None:
        self.mask(b, lambda i, j: True)

    def _window(self, b: Box) -> None:
        n = b.attr("size")
        self.mask(b, lambda i, j: 0 <= i - j < n)

    def _decay(self, b: Box) -> None:
        """L[t, s] = exp(Σ_{i=s+1..t} log_a_i) for s <= t, else 0; exp((t - s) log_a)
        for a log-decay without the query axis."""
        la = self.use(b.inputs[0])
        t, s = b.attr("along")
        rest = tuple(a for a in la.axes if a != t)
        arr = la.aligned((t,) + rest) if t in la.axes else None
        n = self.size(t)
        exp = np.vectorize(sympy.exp, otypes=[object])
        zero = np.zeros(tuple(self.size(a) for a in rest), dtype=object) + sympy.Integer(0)
        rows = []
        for i in range(n):
            row = []
            for j in range(n):
                if j > i:
                    row.append(zero)
                elif arr is None:
                    row.append(exp((i - j) * la.arr))
                else:
                    row.append(exp(sum((arr[m] for m in range(j + 1, i + 1)), zero)))
            rows.append(row)
        shape = tuple(self.size(a) for a in rest)  # np.stack: 0-d entries (no rest) too
        full = np.stack([np.stack([np.broadcast_to(np.asarray(x, dtype=object), shape)
                                   for x in row]) for row in rows])
        self.store(b, full.reshape((n, n) + tuple(self.size(a) for a in rest)),
                   (t, s) + rest)

    # sequence structure ----------------------------------------------------------------
    def _shift(self, b: Box) -> None:
        x = self.use(b.inputs[0])
        dim = x.axes.index(b.attr("along")[0])
        by = b.attr("by", 1)
        arr = np.moveaxis(x.arr, dim, 0)
        out = np.zeros_like(arr) + sympy.Integer(0)
        n = arr.shape[0]
        for i in range(n):
            if 0 <= i - by < n:
                out[i] = arr[i - by]
        self.store(b, np.moveaxis(out, 0, dim), x.axes)

    def _flip(self, b: Box) -> None:
        x = self.use(b.inputs[0])
        self.store(b, np.flip(x.arr, x.axes.index(b.attr("along")[0])), x.axes)

    def _share(self, b: Box) -> None:
        x = self.use(b.inputs[0])
        g, h = b.attr("along")
        dim = x.axes.index(g)
        heads = self.size(h)
        arr = np.repeat(x.arr, heads // x.arr.shape[dim], axis=dim)
        self.store(b, arr, tuple(h if a == g else a for a in x.axes))

    # normalisers -----------------------------------------------------------------------
    def _softmax(self, b: Box) -> None:
        x = self.use(b.inputs[0])
        dim = x.axes.index(b.attr("along")[0])
        e = np.vectorize(sympy.exp, otypes=[object])(x.arr)
        if len(b.inputs) > 1:
            e = e * self.use(b.inputs[1]).aligned(x.axes)
        total = e.sum(axis=dim, keepdims=True)
        # a row with every entry masked sums to 0: its weights are 0 (as in the lowering)
        total = np.vectorize(lambda v: 1 if v == 0 else v, otypes=[object])(total)
        self.store(b, e / total, x.axes)

    def _normalise(self, b: Box) -> None:
        x = self.use(b.inputs[0])
        dim = x.axes.index(b.attr("along")[0])
        eps = sympy.nsimplify(b.attr("eps", 0.0))
        self.store(b, x.arr / (x.arr.sum(axis=dim, keepdims=True) + eps), x.axes)

    def _reshape(self, b: Box) -> None:
        x = self.use(b.inputs[0])
        merge, into = b.attr("merge"), b.attr("into")
        kept = tuple(a for a in x.axes if a not in merge)
        arr = x.aligned(kept + merge)
        arr = arr.reshape(arr.shape[:len(kept)] + tuple(self.size(a) for a in into))
        self.store(b, arr, kept + into)

    # the recurrent and chunked forms ---------------------------------------------------
    def _scan(self, b: Box) -> None:
        """S_t = exp(log_a_t) S_{t-1} + u_t, S_{-1} = 0: the recurrence, step by step."""
        axes = self.out(b)
        (t,) = b.attr("along")
        u = np.broadcast_to(self.use(b.inputs[0]).aligned(axes),
                            tuple(self.size(a) for a in axes))
        la = self.use(b.inputs[1])
        a = la.aligned(axes) if la.axes else la.arr
        dim = axes.index(t)
        u = np.moveaxis(u, dim, 0)
        a = np.moveaxis(np.broadcast_to(a, u.shape if la.axes else ()), dim, 0) \
            if la.axes else a
        exp = np.vectorize(sympy.exp, otypes=[object])
        state = np.zeros(u.shape[1:], dtype=object) + sympy.Integer(0)
        out = []
        for i in range(u.shape[0]):
            decay = exp(a[i]) if la.axes else sympy.exp(a)
            state = decay * state + u[i]
            out.append(state)
        self.store(b, np.moveaxis(np.stack(out), 0, dim), axes)

    def _delta_rule(self, b: Box) -> None:
        """The delta rule: its recurrence (chunk=1) or its chunked UT algorithm
        (anatomy.verify.symbolic_delta)."""
        symbolic_delta.evaluate(self, b)

    def _ssd_bonus(self, b: Box) -> None:
        """RWKV-6's read-out from its definition: y_t = Σ_{s<t} exp(Σ_{i=s+1..t-1} log_a_i)
        (q_t . k_s) v_s + (q_t * u * k_t) . v_t, the state axes summed."""
        q, k, v, la, u = (self.use(x) for x in b.inputs)
        out = self.out(b)
        (t,) = b.attr("along")
        state = tuple(a for a in q.axes if a in k.axes and a not in out)
        layout = (t,) + tuple(a for a in out if a != t) + state
        shape = tuple(self.size(a) for a in layout)
        Q, K, V, A, U = (np.broadcast_to(x.aligned(layout) if x.axes else x.arr, shape)
                         for x in (q, k, v, la, u))
        exp = np.vectorize(sympy.exp, otypes=[object])
        zero = np.zeros(shape[1:], dtype=object) + sympy.Integer(0)
        ys = []
        for i in range(shape[0]):
            y = Q[i] * U[i] * K[i] * V[i]
            for j in range(i):
                y = y + exp(sum((A[m] for m in range(j + 1, i)), zero)) * Q[i] * K[j] * V[j]
            ys.append(y)
        y = np.stack(ys)
        if state:
            y = y.sum(axis=tuple(range(len(layout) - len(state), len(layout))))
        self.store(b, y, layout[:len(layout) - len(state)])

    def _attention(self, b: Box) -> None:
        """Fused softmax attention, from its definition (anatomy.verify.symbolic_attention)."""
        symbolic_attention.evaluate(self, b, _UNARY)

    def _ssd(self, b: Box) -> None:
        """Mamba-2's chunked algorithm (docs/background.md §6): within a chunk the masked
        quadratic form from the chunk's start; each chunk's final state; the states passed
        from chunk to chunk with the chunk's total decay; y_t = intra + q_t exp(cum_t) S_in."""
        q, k, v, la = (self.use(u) for u in b.inputs)
        out = self.out(b)
        (t,) = b.attr("along")
        state = tuple(a for a in q.axes if a in k.axes and a not in out)
        layout = (t,) + tuple(a for a in out if a != t) + state
        shape = tuple(self.size(a) for a in layout)
        Q, K, V = (np.broadcast_to(x.aligned(layout) if x.axes else x.arr, shape)
                   for x in (q, k, v))
        A = np.broadcast_to(la.aligned(layout) if la.axes else la.arr, shape)
        exp = np.vectorize(sympy.exp, otypes=[object])
        zero = np.zeros(shape[1:], dtype=object) + sympy.Integer(0)
        size = b.attr("chunk", 64)
        n = shape[0]
        carried = zero  # the state entering the current chunk
        ys = []
        for start in range(0, n, size):
            end = min(start + size, n)
            for i in range(start, end):
                intra = zero
                for j in range(start, i + 1):
                    intra = intra + exp(sum((A[m] for m in range(j + 1, i + 1)), zero)) \
                        * Q[i] * K[j] * V[j]
                inter = exp(sum((A[m] for m in range(start, i + 1)), zero)) * Q[i] * carried
                ys.append(intra + inter)
            local = zero
            for j in range(start, end):
                local = local + exp(sum((A[m] for m in range(j + 1, end)), zero)) * K[j] * V[j]
            carried = exp(sum((A[m] for m in range(start, end)), zero)) * carried + local
        y = np.stack(ys)
        if state:
            y = y.sum(axis=tuple(range(len(layout) - len(state), len(layout))))
        self.store(b, y, layout[:len(layout) - len(state)])


def evaluate(d: Diagram, length: int) -> dict[str, Value]:
    return Interpreter(d, length).run()


def is_zero(expr) -> bool:
    """Whether an expression is identically zero (expanded, exponentials combined)."""
    e = sympy.expand(expr)
    if e == 0:
        return True
    e = sympy.expand(sympy.powsimp(e, combine="exp", force=True))
    if e == 0 or sympy.cancel(sympy.together(e)) == 0:  # quotients: over one denominator
        return True
    return sympy.simplify(e) == 0


def differs_at_random_point(expr, seed: int = 0) -> bool:
    """A fast refutation: the expression is clearly nonzero at a random rational point."""
    rng = random.Random(seed)
    values = {s: sympy.Rational(rng.randint(-9, 9), rng.randint(3, 7))
              for s in expr.free_symbols}
    try:
        return abs(float(expr.subs(values))) > 1e-9
    except (TypeError, ValueError):
        return False


def symbolically_equal(a: Diagram, b: Diagram, length: int) -> tuple[bool, str]:
    """(equal?, where they differ) for two diagrams with the same signature."""
    ya, yb = evaluate(a, length), evaluate(b, length)
    for pa, pb in zip(a.outputs, b.outputs):
        va, vb = ya[pa.name], yb[pb.name]
        arr_b = vb.aligned(va.axes) if va.axes else vb.arr
        arr_b = np.broadcast_to(arr_b, np.shape(va.arr))
        for index in product(*(range(n) for n in np.shape(va.arr))):
            diff = va.arr[index] - arr_b[index]
            if differs_at_random_point(diff) or not is_zero(diff):
                return False, f"{pa.name}{list(index)}: {va.arr[index]} vs {arr_b[index]}"
    return True, ""
