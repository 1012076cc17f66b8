"""The symbolic meaning of a `delta_rule` box, for certifying rules (anatomy.verify.symbolic).

Written from the papers' equations (docs/background.md section 10), independently of the
kernels in anatomy.kernels.delta_rule: per head,

    S_t = (I - beta_t k_t k_t^T) diag(exp(log_a_t)) S_{t-1} + beta_t k_t v_t^T,  S_-1 = 0,
    o_t = q_t S_t.

`chunk=1` is the recurrence itself, one token at a time; `chunk=C > 1` is the chunked
algorithm of Yang et al. (2024), with the gate folded in, chunk by chunk through the UT
transform. A rule that changes the chunk size is then certified by comparing the two.
"""

from __future__ import annotations

import numpy as np
import sympy

_EXP = np.vectorize(sympy.exp, otypes=[object])


def _zeros(*shape):
    return np.zeros(shape, dtype=object) + sympy.Integer(0)


def evaluate(interp, b):
    """Evaluate box `b` (op `delta_rule`) in the interpreter `interp` and store its output."""
    q, k, v, beta, la = (interp.use(u) for u in b.inputs)
    out = interp.out(b)
    (t,) = b.attr("along")
    heads = tuple(a for a in out if a != t and a in k.axes)
    values = tuple(a for a in out if a != t and a not in k.axes)
    state = tuple(a for a in k.axes if a not in out)

    def laid(x, features: tuple[str, ...], merge: bool):
        """x as [T, heads, features] (heads and features each merged into one axis);
        an axis x lacks is broadcast."""
        axes = (t,) + heads + features
        shape = tuple(interp.size(a) for a in axes)
        arr = np.broadcast_to(x.aligned(axes) if x.axes else x.arr, shape)
        h = int(np.prod(shape[1:1 + len(heads)]))
        f = int(np.prod(shape[1 + len(heads):]))
        return arr.reshape((shape[0], h, f) if merge else (shape[0], h))

    Q, K, A = (laid(x, state, True) for x in (q, k, la))
    V, B = laid(v, values, True), laid(beta, (), False)
    chunk = b.attr("chunk", 64)
    O = np.stack([recurrence(Q[:, h], K[:, h], V[:, h], B[:, h], A[:, h]) if chunk == 1
                  else chunked(Q[:, h], K[:, h], V[:, h], B[:, h], A[:, h], chunk)
                  for h in range(Q.shape[1])], axis=1)
    axes = (t,) + heads + values
    interp.store(b, O.reshape(tuple(interp.size(a) for a in axes)), axes)


def recurrence(Q, K, V, B, A):
    """o for one head (Q, K, A: [T, N]; V: [T, P]; B: [T]), step by step from S = 0."""
    S = _zeros(K.shape[1], V.shape[1])
    out = []
    for i in range(Q.shape[0]):
        S = _EXP(A[i])[:, None] * S                            # diag(alpha_t) S_{t-1}
        kS = (K[i][:, None] * S).sum(axis=0)                   # k_t^T (that state)
        S = S + B[i] * K[i][:, None] * (V[i] - kS)[None, :]    # + beta_t k_t (v_t - k_t^T S)
        out.append((Q[i][:, None] * S).sum(axis=0))            # q_t S_t
    return np.stack(out)


def chunked(Q, K, V, B, A, chunk: int):
    """o for one head, chunk by chunk. Inside a chunk (local indices r, i; -1 its start),
    with G(i, r) = exp(sum_{m=i+1..r} log_a_m) per channel and S the state entering it:

        M = I + diag(beta) tril(k_r . G(i, r) k_i, -1),   T = M^-1 diag(beta)  (UT transform)
        W = T (G(-1, .) k),   U = T V,   X = U - W S
        o_r = (G(-1, r) q_r) S + sum_{i<=r} (q_r . G(i, r) k_i) X_i
        S_next = G(-1, C-1) S + sum_i (G(i, C-1) k_i) X_i^T

    (the state after r is G(-1, r) S + sum_{i<=r} (G(i, r) k_i) X_i^T: X_i is what token i
    writes once the transitions before it are folded in)."""
    n, N = Q.shape[0], K.shape[1]
    S = _zeros(N, V.shape[1])
    out = []
    for start in range(0, n, chunk):
        C = min(chunk, n - start)
        q, k, v, beta, a = (x[start:start + C] for x in (Q, K, V, B, A))

        def G(i, r, a=a):
            return _EXP(sum((a[m] for m in range(i + 1, r + 1)), _zeros(N)))

        T = _zeros(C, C)
        for r in range(C):  # row r of M T = diag(beta): forward substitution
            T[r, r] = beta[r]
            for i in range(r):
                T[r] = T[r] - beta[r] * (k[r] * G(i, r) * k[i]).sum() * T[i]
        W = T.dot(np.stack([G(-1, r) * k[r] for r in range(C)]))
        X = T.dot(v) - W.dot(S)
        for r in range(C):
            o = ((G(-1, r) * q[r])[:, None] * S).sum(axis=0)
            for i in range(r + 1):
                o = o + (q[r] * G(i, r) * k[i]).sum() * X[i]
            out.append(o)
        S = G(-1, C - 1)[:, None] * S + sum(
            (G(i, C - 1) * k[i])[:, None] * X[i][None, :] for i in range(C))
    return np.stack(out)
