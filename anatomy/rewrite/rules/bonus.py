"""RWKV-6's read-out as one box (docs/background.md, per-channel decay): the lowering rule
that turns the state before the step plus the current token's bonus term into
`ssd_bonus(q, k, v, log_a, u, t)` (one gated-kernel call with a bonus), and the rule that
undoes it.

    past = Σ_{s, n} L(shift(log_a))[t, s, n] q[t, n] shift(k)[s, n] shift(v)[s, p]
         = q_t S_{t-1}   (S_t = diag(a_t) S_{t-1} + k_t v_t^T),
    y    = past + (Σ_n q[t, n] u[n] k[t, n]) v[t, p] = ssd_bonus(q, k, v, log_a, u, t).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from anatomy.ir import Box, Diagram, Use
from anatomy.ops import ssd_state

from ..edit import Edit
from ..site import EXACT, Rule, Site


@dataclass(frozen=True)
class Bonus:
    """The `ssd` box over shifted inputs and the uses of the unshifted q, k, v, log_a and
    the bonus u (every one read under its wire's own axis names)."""

    ssd: Box
    q: Use
    k: Use
    v: Use
    log_a: Use
    bonus: Use


def _shifted(d: Diagram, u: Use, t: str) -> Use | None:
    """The input of `shift(x, t)` (one step later) that `u` reads, or None."""
    p = d.producer(u.wire)
    if p is None or p.op != "shift" or p.attr("along") != (t,) or p.attr("by", 1) != 1:
        return None
    return p.inputs[0]


def match_bonus(d: Diagram, box: Box) -> Bonus | None:
    """Recognise RWKV-6's state before the step plus the bonus in an `add` box (or None):
    a decay per key channel, one heads axis and one state axis (what the kernel runs)."""
    plain = lambda u: u.axes == d.wires[u.wire].axes
    if box.op != "add" or len(box.inputs) != 2 or not all(plain(u) for u in box.inputs):
        return None
    for i in (0, 1):
        past, cur = (d.producer(u.wire) for u in (box.inputs[i], box.inputs[1 - i]))
        if past is None or past.op != "ssd" or cur is None or cur.op != "contract":
            continue
        (t,) = past.attr("along")
        q, ks, vs, ls = past.inputs
        k, v, log_a = (_shifted(d, u, t) for u in (ks, vs, ls))
        if k is None or v is None or log_a is None or \
                not all(plain(u) for u in (q, ks, vs, ls, k, v, log_a)) or \
                len(cur.inputs) != 2:
            continue
        now = next((u for u in cur.inputs if u.wire != v.wire), None)
        if now is None or [u.wire for u in cur.inputs if u is not now] != [v.wire]:
            continue
        n = d.producer(now.wire)
        if n is None or n.op != "contract" or len(n.inputs) != 3:
            continue
        rest = [u for u in n.inputs if (u.wire, u.axes) not in ((q.wire, q.axes),
                                                                  (k.wire, k.axes))]
        if len(rest) != 1 or t in rest[0].axes or not all(plain(u) for u in n.inputs):
            continue
        m = Bonus(past, q, k, v, log_a, rest[0])
        if _kernel_runs(d, m):
            return m
    return None


def _kernel_runs(d: Diagram, m: Bonus) -> bool:
    """One heads axis, one state axis, a log-decay per state channel, and a bonus over
    heads and state only: the gated kernel's `bonus` [H, N]."""
    (t,) = m.ssd.attr("along")
    out = d.wires[m.ssd.outputs[0]].axes
    q, k, la = m.q.axes, m.k.axes, m.log_a.axes
    state = ssd_state(q, k, out)
    heads = tuple(a for a in out if a != t and (a in q or a in k or a in la))
    return len(heads) == 1 and len(state) == 1 and state[0] in la and \
        bool(m.bonus.axes) and set(m.bonus.axes) <= set(heads + state)


def find_fuse_bonus(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if match_bonus(d, b) is not None:
            yield Site("fuse_bonus", b.id)


def fuse_bonus(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    m = match_bonus(d, b)
    e.replace(b.id, "ssd_bonus", [m.q, m.k, m.v, m.log_a, m.bonus],
              along=m.ssd.attr("along"), chunk=m.ssd.attr("chunk", 64))
    return e.done()


def find_unfuse_bonus(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op == "ssd_bonus":
            yield Site("unfuse_bonus", b.id)


def unfuse_bonus(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    q, k, v, log_a, u = b.inputs
    (t,) = b.attr("along")
    out = d.wires[b.outputs[0]].axes
    state = ssd_state(q.axes, k.axes, out)
    ks, vs, ls = (e.add("shift", [x], x.axes, "_", before=b.id, along=(t,))
                  for x in (k, v, log_a))
    past = e.add("ssd", [q, ks, vs, ls], out, "_", before=b.id, along=(t,),
                 chunk=b.attr("chunk", 64))
    now_axes = tuple(dict.fromkeys(a for a in q.axes + k.axes + u.axes if a not in state))
    now = e.add("contract", [q, u, k], now_axes, "_", before=b.id)
    cur = e.add("contract", [now, v], out, "_", before=b.id)
    e.replace(b.id, "add", [past, cur])
    return e.done()


_CORE = """
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h, n]) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
  param u[h, n] ~ uniform(-1, 1)
"""

RULES = [
    Rule("fuse_bonus", EXACT,
         "Σ_{s,n} L(shift(log a))[t, s, n] q[t, n] shift(k)[s, n] shift(v)[s, p] + (Σ_n q u k)"
         " v[t, p] = ssd_bonus(q, k, v, log a, u): RWKV-6's state before the step plus the "
         "current token's bonus is one gated-kernel call",
         find_fuse_bonus, fuse_bonus, witnesses=(
             _CORE + "  ks[t, h, n] = shift(k, t)\n  vs[t, h, p] = shift(v, t)\n"
                     "  ls[t, h, n] = shift(log_a, t)\n"
                     "  past[t, h, p] = ssd(q, ks, vs, ls, t, chunk=2)\n"
                     "  now[t, h] = q * u * k\n  y[t, h, p] = past + now * v\n",
         )),
    Rule("unfuse_bonus", EXACT,
         "ssd_bonus(q, k, v, log a, u) = ssd(q, shift(k), shift(v), shift(log a)) + "
         "(Σ_n q u k) v: the fused read-out as the state before the step plus the bonus",
         find_unfuse_bonus, unfuse_bonus, normalising=True, witnesses=(
             _CORE + "  y[t, h, p] = ssd_bonus(q, k, v, log_a, u, t, chunk=2)\n",
             _CORE + "  y[t, h, p] = ssd_bonus(q, k, v, log_a, u, t, chunk=3)\n",
         )),
]
