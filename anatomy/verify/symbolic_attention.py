"""The symbolic meaning of an `attention` box, for certifying rules (anatomy.verify.symbolic).

Written from the definition, independently of lowering/softmax_bias.py: per head and query
position t,

    y[t] = Σ_s w[t, s] v[s],  w[t, s] = exp(x[t, s]) / Σ_{s' kept} exp(x[t, s'])  (s kept),

with x = expr(scale · Σ_n q[t, n] k[s, n]) and "kept" the mask: every s when not causal,
s <= t when causal, and t - window < s <= t with a window. In the expression, ("t",) and
("s",) are the positions, ("segsum", i) is Σ_{j=s+1..t} c_j for s <= t (c = leaf i, per
token) else -inf, ("ramp", e) is (t - s) e for s <= t else -inf, ("leaf", i) is leaf i read
at (head, t, s). A row with no key kept gets weights 0.
"""

from __future__ import annotations

import numpy as np
import sympy

from anatomy.ops import attention_roles

_BINARY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
           "div": lambda a, b: a / b, "pow": lambda a, b: a ** b}


def evaluate(interp, b, unary: dict) -> None:
    """Evaluate box `b` (op `attention`) in the interpreter `interp` and store its output."""
    t, s = b.attr("along")
    uses = [interp.use(u) for u in b.inputs]
    q, k, v = uses[:3]
    out = interp.out(b)
    heads, state, values = attention_roles(tuple(x.axes for x in uses), (t, s), out)
    n_scales = b.attr("scales", 0)
    scale = sympy.nsimplify(b.attr("scale", 1.0))
    for x in uses[3:3 + n_scales]:
        scale = scale * x.arr
    leaves = uses[3 + n_scales:]
    grid = heads + (t, s)
    size = {a: interp.size(a) for a in grid + state + values}
    every = grid + state
    prod = q.aligned(every) * k.aligned(every)
    score = scale * np.broadcast_to(prod, tuple(size[a] for a in every)).sum(
        axis=tuple(range(len(grid), len(every))))
    n = size[t]
    x = _walk(b.attr("expr", ("score",)), score, leaves, grid, t, s, n, unary)
    x = np.broadcast_to(np.asarray(x, dtype=object), score.shape)
    window = b.attr("window", 0)
    causal = b.attr("causal", False)
    def kept(i: int, j: int) -> bool:
        return not causal or (j <= i and (not window or i - j < window))
    keep = np.array([[sympy.Integer(int(kept(i, j))) for j in range(n)] for i in range(n)],
                    dtype=object)
    e = np.vectorize(sympy.exp, otypes=[object])(x) * keep
    total = e.sum(axis=-1, keepdims=True)
    total = np.vectorize(lambda z: 1 if z == 0 else z, otypes=[object])(total)
    w = e / total  # [heads..., t, s]
    vals = v.aligned(heads + (s,) + values)
    vals = np.broadcast_to(vals, tuple(size[a] for a in heads + (s,) + values))
    wv = w.reshape(w.shape + (1,) * len(values)) * \
        vals.reshape(vals.shape[:len(heads)] + (1,) + vals.shape[len(heads):])
    interp.store(b, wv.sum(axis=len(heads) + 1), heads + (t,) + values)


def _walk(expr: tuple, score, leaves, grid, t, s, n, unary):
    """The expression over [heads..., t, s] (broadcastable object arrays)."""
    head = expr[0]
    lead = (1,) * (len(grid) - 2)
    if head == "score":
        return score
    if head in ("t", "s"):
        pos = np.array([sympy.Integer(i) for i in range(n)], dtype=object)
        return pos.reshape(lead + ((n, 1) if head == "t" else (1, n)))
    if head == "const":
        return sympy.nsimplify(expr[1])
    if head == "leaf":
        x = leaves[expr[1]]
        return x.aligned(grid) if x.axes else x.arr
    if head == "segsum":
        c = leaves[expr[1]]
        arr = c.aligned(grid[:-1])  # [heads..., t]
        return _lower_triangle(lambda i, j: sum((arr[..., m] for m in range(j + 1, i + 1)),
                                                sympy.Integer(0)), arr.shape[:-1], n)
    if head == "ramp":
        slope = np.asarray(_walk(expr[1], score, leaves, grid, t, s, n, unary), dtype=object)
        slope = slope.reshape(slope.shape[:-2]) if slope.ndim == len(grid) else slope
        return _lower_triangle(lambda i, j: (i - j) * slope, np.shape(slope), n)
    args = [_walk(x, score, leaves, grid, t, s, n, unary) for x in expr[1:]]
    if head == "neg":
        return -args[0]
    if head in _BINARY:
        return _BINARY[head](*args)
    f = np.vectorize(unary[head], otypes=[object])
    return f(args[0])


def _lower_triangle(entry, lead: tuple, n: int):
    """[lead..., t, s]: entry(i, j) (an array over lead) for j <= i, else -inf."""
    out = np.empty(lead + (n, n), dtype=object)
    for i in range(n):
        for j in range(n):
            out[..., i, j] = entry(i, j) if j <= i else -sympy.oo
    return out
