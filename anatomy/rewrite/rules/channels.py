"""Rules of gates constant along a channel (docs/background.md sections 9 and 10).

A log-decay written with a key channel n but constant along it, such as
`la[t, h, n] = log_a + 0 * index(n)` or `log_a * index(n) ** 0`, is the narrower gate read
along n:

- `decay_channel`: a per-channel decay constant along n is the scalar decay, wherever every
  reader is a product in which another factor carries n. So SSD (log a[t, h]), retention
  (log a[h]) and causal linear attention (log a = 0) are per-channel decays (gated linear
  attention) with the same value in every channel.
- `delta_gate`: the delta rule's gate read broadcast, (I - beta k k^T) diag(alpha 1) =
  alpha (I - beta k k^T): KDA with a gate constant across channels is Gated DeltaNet, and
  a log-gate of 0 (`0 * x`) is DeltaNet's number 0.
"""

from __future__ import annotations

from collections.abc import Iterator

from anatomy.ir import Diagram, Use

from ..edit import Edit, rename_use
from ..match import producer, seen_as, summed
from ..site import EXACT, Rule, Site
from .algebra import _is_one, is_zero
from .masks import decay_axes

ZERO = "zero"  # a broadcast of the number 0


def broadcast_of(d: Diagram, u: Use) -> Use | str | None:
    """The narrower value the value `u` reads is a broadcast of, in the reader's names:
    `x + 0·y`, `0·y + x` or `x − 0·y` is x, a product of x and ones (`1`, `y ** 0`) without
    a sum is x, and a product with a zero factor is `ZERO`; None when `u` is none of these
    or the narrower value has every axis `u` has."""
    p = producer(d, u)
    if p is None:
        return None
    x = None
    if p.op in ("add", "sub"):
        for i in (1, 0) if p.op == "add" else (1,):
            if is_zero(d, p.inputs[i]):
                x = p.inputs[1 - i]
                break
    elif p.op == "contract":
        if any(is_zero(d, f) for f in p.inputs):
            return ZERO
        rest = [f for f in p.inputs if not _is_one(d, f)]
        if len(rest) == 1 and len(p.inputs) > 1 and not summed(d, p):
            x = rest[0]
    if x is None:
        return None
    x = rename_use(x, seen_as(d, u))
    return x if set(x.axes) < set(u.axes) else None


def _narrow(e: Edit, x: Use | str, before: str) -> Use:
    return e.const(0, before=before) if x == ZERO else x


# -- decay_channel: a per-channel decay constant along its channel is the scalar decay ------------
def _dropped(d: Diagram, box_id: str) -> tuple[Use | str, set[str]] | None:
    """(the narrower log-decay, the channel axes it lacks, in the decay's names) when the
    decay `box_id` may read it: every reader is a product in which another factor carries
    each such channel. None otherwise."""
    b = d.box(box_id)
    if any(p.name == b.id for p in d.outputs):
        return None
    x = broadcast_of(d, b.inputs[0])
    if x is None:
        return None
    t, _ = b.attr("along")
    missing = set(b.inputs[0].axes) - set(() if x == ZERO else x.axes) - {t}
    if not missing:
        return None  # only the query axis: `add_zero` reads it as a constant decay
    for r in d.consumers(b.id):
        if r.op != "contract":
            return None
        for i, u in enumerate(r.inputs):
            if u.wire != b.id:
                continue
            names = seen_as(d, u)
            others = {a for j, v in enumerate(r.inputs) if j != i for a in v.axes}
            if any(names[m] not in others for m in missing):
                return None
    return x, missing


def find_decay_channel(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op == "decay" and _dropped(d, b.id) is not None:
            yield Site("decay_channel", b.id)


def decay_channel(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    x, _ = _dropped(d, b.id)
    x = _narrow(e, x, b.id)
    t, s = b.attr("along")
    mask = e.add("decay", [x], decay_axes(x.axes, t, s), "_", before=b.id, along=(t, s))
    for r in d.consumers(b.id):
        inputs = [Use(mask.wire, tuple(seen_as(d, u)[a] for a in mask.axes))
                  if u.wire == b.id else u for u in r.inputs]
        e.set_inputs(r.id, inputs)
    return e.done()


# -- delta_gate: the delta rule's gate read broadcast ----------------------------------------------
def find_delta_gate(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op == "delta_rule" and broadcast_of(d, b.inputs[4]) is not None:
            yield Site("delta_gate", b.id)


def delta_gate(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    x = _narrow(e, broadcast_of(d, b.inputs[4]), b.id)
    e.set_inputs(b.id, b.inputs[:4] + (x,))
    return e.done()


_CORE = """
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h]) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
"""
_DELTA = """
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p], beta[t, h], log_a[t, h]) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
  kk[t, h, n] = k / 2
"""

RULES = [
    Rule("decay_channel", EXACT,
         "L(a ⊗ 1_n)[t, s, n] · Π F = L(a)[t, s] · Π F where a factor of F carries n: a "
         "per-channel decay constant along its channel is the scalar decay (SSD, retention and "
         "linear attention are gated linear attention with one value in every channel)",
         find_decay_channel, decay_channel, normalising=True, witnesses=(
             _CORE + "  la[t, h, n] = log_a + 0 * index(n)\n"
                     "  y[t, h, p] = decay(la, t, s) * q * k[s, h, n] * v[s, h, p]\n",
             _CORE + "  la[t, h, n] = log_a * index(n) ** 0\n"
                     "  y[t, h, p] = decay(la, t, s) * q * k[s, h, n] * v[s, h, p]\n",
             _CORE + "  param g[h] ~ uniform(-1, -0.1)\n"
                     "  la[t, h, n] = g + 0 * index(t) * index(n)\n"
                     "  y[t, h, p] = decay(la, t, s) * q * k[s, h, n] * v[s, h, p]\n",
             _CORE + "  la[t, h, n] = 0 * q\n"
                     "  y[t, h, p] = decay(la, t, s) * q * k[s, h, n] * v[s, h, p]\n",
         )),
    Rule("delta_gate", EXACT,
         "delta_rule(q, k, v, β, a ⊗ 1) = delta_rule(q, k, v, β, a): a gate constant along "
         "a channel is one gate, (I − β k kᵀ) diag(α 1) = α (I − β k kᵀ) (KDA with a gate "
         "constant across channels is Gated DeltaNet; a log-gate 0 · x is DeltaNet's 0)",
         find_delta_gate, delta_gate, normalising=True, witnesses=(
             _DELTA + "  la[t, h, n] = log_a + 0 * index(n)\n"
                      "  y[t, h, p] = delta_rule(q, kk, v, beta, la, t, chunk=1)\n",
             _DELTA + "  la[t, h, n] = log_a * index(n) ** 0\n"
                      "  y[t, h, p] = delta_rule(q, kk, v, beta, la, t, chunk=1)\n",
             _DELTA + "  la[t, h] = 0 * log_a\n"
                      "  y[t, h, p] = delta_rule(q, kk, v, beta, la, t, chunk=1)\n",
         )),
]
