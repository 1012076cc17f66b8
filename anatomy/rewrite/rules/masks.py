"""Rules of decay masks and their forms (docs/background.md §3–§6).

A decay mask L(a)[t, s] = exp(Σ_{i=s+1..t} log a_i) for s <= t, else 0, is 1-semiseparable:
- state space duality: Σ_s L(a)[t, s] u[s] is the recurrence S_t = a_t S_{t-1} + u_t (`scan`);
- masked linear attention Σ_{s,n} L[t, s] q[t, n] k[s, n] v[s, p] is Mamba-2's chunked
  algorithm (`ssd`) for any chunk size, and so is a decay per key channel,
  Σ_{s,n} L[t, s, n] q[t, n] k[s, n] v[s, p] (gated linear attention's chunked form);
- the causal mask is the decay with log a = 0, and decays compose: L(a) ∘ L(b) = L(a·b),
  i.e. their log-decays add.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from anatomy.ir import Box, Diagram, Use
from anatomy.ops import OPS

from ..edit import Edit, rename_use
from ..match import out_axes, producer, seen_as, summed
from ..site import EXACT, Rule, Site

DEFAULT_CHUNK = 64


def decay_axes(log_a: tuple[str, ...], query: str, key: str) -> tuple[str, ...]:
    """The axes of decay(log_a, query, key), as its op contract gives them."""
    return OPS["decay"].out_axes((log_a,), (query, key))


def mask_of(d: Diagram, u: Use) -> tuple[Box, str, str] | None:
    """A decay or causal factor: (its box, query axis, key axis) in the reader's names."""
    p = producer(d, u)
    if p is None or p.op not in ("decay", "causal"):
        return None
    rename = seen_as(d, u)
    t, s = (rename[a] for a in p.attr("along"))
    return p, t, s


def log_decay(d: Diagram, e: Edit, u: Use, before: str) -> Use:
    """The log-decay of a mask factor, in the reader's names (0 for the causal mask)."""
    p = d.producer(u.wire)
    if p.op == "causal":
        return e.const(0, before=before)
    return rename_use(p.inputs[0], seen_as(d, u))


# -- state space duality: a decay mask summed against u is a recurrence --------------------------
def find_duality(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op != "contract" or len(b.inputs) != 2 or not all(u.axes for u in b.inputs):
            continue
        for i in (0, 1):
            m = mask_of(d, b.inputs[i])
            u = b.inputs[1 - i]
            if m is None or m[0].op != "decay":
                continue
            _, t, s = m
            if summed(d, b) == {s} and t in out_axes(d, b) and t not in u.axes:
                yield Site("duality", b.id, (i,))


def duality(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    (i,) = site.params
    _, t, s = mask_of(d, b.inputs[i])
    log_a = log_decay(d, e, b.inputs[i], b.id)
    u = rename_use(b.inputs[1 - i], {s: t})
    e.replace(b.id, "scan", [u, log_a], along=(t,))
    return e.done()


def find_unscan(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op == "scan":
            yield Site("unscan", b.id)


def unscan(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    u, log_a = b.inputs
    masked_product(e, b, log_a, [], [u])
    return e.done()


def masked_product(e: Edit, b: Box, log_a: Use, on_query: list[Use], on_key: list[Use]):
    """Turn box `b` (along time axis t) into Σ_s L(log_a)[t, s] · Π on_query · Π on_key,
    the `on_key` factors read on a new key axis s."""
    (t,) = b.attr("along")
    s = e.fresh_axis("s")
    mask = e.add("decay", [log_a], decay_axes(log_a.axes, t, s), "_", before=b.id,
                 along=(t, s))
    e.replace(b.id, "contract", [mask, *on_query, *(rename_use(u, {t: s}) for u in on_key)])


# -- masked linear attention is the chunked SSD algorithm ----------------------------------------
@dataclass(frozen=True)
class MaskedLinearAttention:
    """y[t, H, P] = Σ_{s, N} L[t, s, H(, N)] q[t, G, N] k[s, G, N] v[s, H, P] · scalars (one
    contraction; indices of its inputs, and its axes by role). A decay with the state axes
    N decays every key channel on its own (gated linear attention)."""

    mask: int
    query: int
    key: int
    value: int | None  # None: the normaliser Σ_s L q.k (values of one)
    t: str
    s: str
    heads: tuple[str, ...]
    state: tuple[str, ...]
    values: tuple[str, ...]
    scalars: tuple[int, ...]


def match_masked_linear_attention(d: Diagram, box: Box) -> MaskedLinearAttention | None:
    """Recognise masked linear attention in a contraction (structurally; or None)."""
    if box.op != "contract":
        return None
    out = out_axes(d, box)
    factors = [(i, u) for i, u in enumerate(box.inputs) if u.axes]
    scalars = tuple(i for i, u in enumerate(box.inputs) if not u.axes)
    masks = []
    for i, u in factors:
        m = mask_of(d, u)
        if m is not None and m[1] in out and m[2] not in out:
            masks.append((i, m[1], m[2]))
    if len(masks) != 1:
        return None
    mask, t, s = masks[0]
    rest = [(i, u) for i, u in factors if i != mask]
    on_t = [(i, u) for i, u in rest if t in u.axes and s not in u.axes]
    on_s = [(i, u) for i, u in rest if s in u.axes and t not in u.axes]
    if len(on_t) != 1 or len(on_s) not in (1, 2) or len(on_t) + len(on_s) != len(rest):
        return None
    (query, q), = on_t
    sums = {a for _, u in factors for a in u.axes} - set(out)
    state = tuple(a for a in q.axes if a in sums)
    keys = [(i, u) for i, u in on_s if set(state) <= set(u.axes)
            and not (set(u.axes) - {s} - set(state)) - set(out)]
    if not keys:
        return None
    key, k = keys[0]
    others = [(i, u) for i, u in on_s if i != key]
    mask_axes = box.inputs[mask].axes
    heads = tuple(a for a in out if a != t and (a in mask_axes or a in q.axes or a in k.axes))
    values = tuple(a for a in out if a != t and a not in heads)
    if len(heads) > 1 or sums != {s} | set(state):
        return None
    if any(a not in heads + state + (t,) for a in q.axes) or \
            any(a not in heads + state + (s,) for a in k.axes):
        return None
    value = None
    if others:
        value, v = others[0]
        if any(a not in heads + values + (s,) for a in v.axes):
            return None
    elif values:
        return None
    # a decay may also carry state axes: a decay per key channel (gated linear attention)
    per_channel = state if producer(d, box.inputs[mask]).op == "decay" else ()
    if any(a not in (t, s) + heads + per_channel for a in mask_axes):
        return None
    return MaskedLinearAttention(mask, query, key, value, t, s, heads, state, values, scalars)


def decay_value_axes(d: Diagram, box: Box) -> tuple[str, ...]:
    """The value axes a decay carries in a masked product that is not masked linear attention
    only because of them: y[t, h, p] = Σ_{s, n} L[t, s, h, n, p] q k v decays each (key
    channel, value) pair on its own, which no chunked kernel runs. () otherwise (Mamba-1's
    decay per (channel, state), with the channel as the heads axis, is masked linear
    attention)."""
    if box.op != "contract" or match_masked_linear_attention(d, box) is not None:
        return ()
    out = out_axes(d, box)
    for i, u in enumerate(box.inputs):
        m = mask_of(d, u)
        if m is None or m[0].op != "decay" or m[1] not in out or m[2] in out:
            continue
        others = [w for j, w in enumerate(box.inputs) if j != i]
        states = {a for w in others for a in w.axes} - set(out) - {m[2]}
        qk = {a for w in others if set(w.axes) & states for a in w.axes}
        if states and m[1] in qk and m[2] in qk:
            return tuple(a for a in u.axes if a in out and a != m[1] and a not in qk)
    return ()


def find_chunk(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if match_masked_linear_attention(d, b) is not None:
            yield Site("chunk", b.id, (DEFAULT_CHUNK,))


def chunk(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    m = match_masked_linear_attention(d, b)
    q = b.inputs[m.query]
    if m.scalars:
        q = e.add("contract", [q] + [b.inputs[i] for i in m.scalars], q.axes, "q_scaled",
                  before=b.id)
    k = rename_use(b.inputs[m.key], {m.s: m.t})
    v = rename_use(b.inputs[m.value], {m.s: m.t}) if m.value is not None else \
        e.const(1, before=b.id)
    log_a = log_decay(d, e, b.inputs[m.mask], b.id)
    e.replace(b.id, "ssd", [q, k, v, log_a], along=(m.t,), chunk=site.params[0])
    return e.done()


def find_unchunk(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op == "ssd":
            yield Site("unchunk", b.id)


def unchunk(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    q, k, v, log_a = b.inputs
    masked_product(e, b, log_a, [q], [k, v])
    return e.done()


# -- decay algebra -----------------------------------------------------------------------------
def find_causal_decay(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op != "causal" or any(p.name == b.id for p in d.outputs):
            continue
        if all(r.op == "contract" for r in d.consumers(b.id)):
            yield Site("causal_decay", b.id)


def causal_decay(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    e.replace(b.id, "decay", [e.const(0, before=b.id)], along=b.attr("along"))
    return e.done()


def find_log_causal(d: Diagram) -> Iterator[Site]:
    """softmax(x + log L(0), s) with L(0) = decay(0, t, s) (or already masked causally)."""
    for sm in d.boxes:
        if sm.op != "softmax":
            continue
        add = producer(d, sm.inputs[0])
        if add is None or add.op != "add" or len(d.consumers(add.outputs[0])) != 1:
            continue
        for i in (0, 1):
            found = _log_causal_axes(d, sm, add, i)
            if found is None:
                continue
            if len(sm.inputs) > 1:
                mask = producer(d, sm.inputs[1])
                if mask is None or mask.op != "causal" or tuple(
                        seen_as(d, sm.inputs[1])[a] for a in mask.attr("along")) != found:
                    continue
            yield Site("log_causal", sm.id, (i,))


def _log_causal_axes(d: Diagram, sm: Box, add: Box, i: int):
    """(t, s) in the softmax's names when the add's input i is log(decay(0, t, s)) and the
    softmax runs along s; else None."""
    log = producer(d, add.inputs[i])
    if log is None or log.op != "log":
        return None
    dec = producer(d, log.inputs[0])
    if dec is None or dec.op != "decay":
        return None
    const = producer(d, dec.inputs[0])
    if const is None or const.op != "const" or const.attr("value") != 0:
        return None
    to_log, to_add, to_sm = (seen_as(d, u) for u in (log.inputs[0], add.inputs[i],
                                                     sm.inputs[0]))
    t, s = (to_sm[to_add[to_log[a]]] for a in dec.attr("along"))
    return (t, s) if s == sm.attr("along")[0] else None


def log_causal(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    sm = d.box(site.box)
    add = producer(d, sm.inputs[0])
    (i,) = site.params
    t, s = _log_causal_axes(d, sm, add, i)
    x = rename_use(add.inputs[1 - i], seen_as(d, sm.inputs[0]))
    if len(sm.inputs) > 1:
        e.set_inputs(sm.id, [x, sm.inputs[1]])
    else:
        mask = e.add("causal", [], (t, s), "_", before=sm.id, along=(t, s))
        e.replace(sm.id, "softmax", [x, mask], **{**dict(sm.attrs), "tensor_options": ("mask",)})
    return e.done()


def find_decay_compose(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op != "contract":
            continue
        masks = [(i, m) for i, u in enumerate(b.inputs)
                 if (m := mask_of(d, u)) is not None and m[0].op == "decay"]
        for x in range(len(masks)):
            for y in range(x + 1, len(masks)):
                (i, mi), (j, mj) = masks[x], masks[y]
                if mi[1:] == mj[1:]:
                    yield Site("decay_compose", b.id, (i, j))


def decay_compose(d: Diagram, site: Site) -> Diagram:
    e = Edit(d)
    b = d.box(site.box)
    i, j = site.params
    _, t, s = mask_of(d, b.inputs[i])
    a, c = (log_decay(d, e, b.inputs[x], b.id) for x in (i, j))
    axes = a.axes + tuple(x for x in c.axes if x not in a.axes)
    total = e.add("add", [a, c], axes, "_", before=b.id)
    mask = e.add("decay", [total], decay_axes(axes, t, s), "_", before=b.id,
                 along=(t, s))
    rest = [u for x, u in enumerate(b.inputs) if x not in (i, j)]
    e.set_inputs(b.id, rest + [mask])
    return e.done()


_CORE = """
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h]) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
"""

RULES = [
    Rule("duality", EXACT,
         "Σ_s L(a)[t, s] u[s] = S_t where S_t = a_t S_{t-1} + u_t: a decay mask summed "
         "against u is a recurrence (state space duality)",
         find_duality, duality, witnesses=(
             _CORE + "  kv[t, h, n, p] = k * v\n"
                     "  st[t, h, n, p] = decay(log_a, t, s) * kv[s, h, n, p]\n"
                     "  y[t, h, p] = q * st\n",
         )),
    Rule("unscan", EXACT,
         "scan(u, log a)_t = Σ_{s<=t} exp(Σ_{i=s+1..t} log a_i) u_s: the recurrence as a "
         "decay mask (state space duality, read backwards)",
         find_unscan, unscan, normalising=True, witnesses=(
             _CORE + "  st[t, h, n, p] = scan(k * v, log_a, t)\n  y[t, h, p] = q * st\n",
             _CORE + "  param g[h] ~ uniform(-1, -0.1)\n"
                     "  st[t, h, n, p] = scan(k * v, g, t)\n  y[t, h, p] = q * st\n",
         )),
    Rule("chunk", EXACT,
         "Σ_{s,n} L(a)[t, s] q[t, n] k[s, n] v[s, p] = ssd(q, k, v, log a): masked linear "
         "attention is the chunked SSD algorithm, for any chunk size (a decay per key "
         "channel n too: gated linear attention)",
         find_chunk, chunk, witnesses=(
             _CORE + "  y[t, h, p] = decay(log_a, t, s) * q * k[s, h, n] * v[s, h, p]\n",
             _CORE + "  y[t, h, p] = causal(t, s) * q * k[s, h, n] * v[s, h, p] / 2\n",
             _CORE + "  den[t, h] = causal(t, s) * q * k[s, h, n]\n  y[t, h, p] = v * den\n",
             _CORE + "  param g[h, n] ~ uniform(-1, -0.1)\n  la[t, h, n] = log_a * g\n"
                     "  y[t, h, p] = decay(la, t, s) * q * k[s, h, n] * v[s, h, p]\n",
         )),
    Rule("unchunk", EXACT,
         "ssd(q, k, v, log a) = Σ_{s,n} L(a)[t, s] q[t, n] k[s, n] v[s, p]: the chunked "
         "algorithm as masked linear attention (for any chunk size)",
         find_unchunk, unchunk, normalising=True, witnesses=(
             _CORE + "  y[t, h, p] = ssd(q, k, v, log_a, t, chunk=2)\n",
             _CORE + "  y[t, h, p] = ssd(q, k, v, log_a, t, chunk=3)\n",
             _CORE + "  param g[h, n] ~ uniform(-1, -0.1)\n  la[t, h, n] = log_a * g\n"
                     "  y[t, h, p] = ssd(q, k, v, la, t, chunk=2)\n",
         )),
    Rule("causal_decay", EXACT,
         "causal(t, s) = L(0)[t, s]: the causal mask is the decay with log a = 0 (where it "
         "multiplies)",
         find_causal_decay, causal_decay, normalising=True, witnesses=(
             _CORE + "  y[t, h, p] = causal(t, s) * q * k[s, h, n] * v[s, h, p]\n",
         )),
    Rule("log_causal", EXACT,
         "softmax_s(x + log L(0)[t, s]) = softmax_s(x, mask=causal(t, s)): the log of the "
         "decay with log a = 0 is the causal mask's bias (0 or -inf), so a forget gate at 1 "
         "inside a softmax is causal softmax",
         find_log_causal, log_causal, normalising=True, witnesses=(
             _CORE + "  qk[h, t, s] = q * k[s, h, n]\n"
                     "  w[h, t, s] = softmax(qk + log(decay(0, t, s)), s)\n"
                     "  y[t, h, p] = w * v[s, h, p]\n",
             _CORE + "  qk[h, t, s] = q * k[s, h, n]\n"
                     "  w[h, t, s] = softmax(log(decay(0, t, s)) + qk, s, mask=causal(t, s))\n"
                     "  y[t, h, p] = w * v[s, h, p]\n",
         )),
    Rule("decay_compose", EXACT,
         "L(a) ∘ L(b) = L(a·b): decay masks compose by adding their log-decays",
         find_decay_compose, decay_compose, normalising=True, witnesses=(
             _CORE + "  param g[h] ~ uniform(-1, -0.1)\n"
                     "  y[t, h, p] = decay(log_a, t, s) * decay(g, t, s) * q * k[s, h, n]"
                     " * v[s, h, p]\n",
         )),
]
