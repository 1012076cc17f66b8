"""Rules of the delta rule's forms (docs/background.md section 10).

A `delta_rule` box with `chunk=1` is the recurrence S_t = (I − β_t k_t k_tᵀ) diag(α_t)
S_{t−1} + β_t k_t v_tᵀ, o_t = q_t S_t, one token at a time; with `chunk=C` it is the chunked
algorithm of Yang et al. (2024): per chunk the WY representation of the product of the
transitions, its rows from one unit lower-triangular solve (the UT transform), the gate
folded in as SSD folds it into its mask. The two rules say these are one function for every
chunk size; the compiler's chunked form (anatomy.kernels.delta_rule, its PyTorch chunked
path) rests on `delta_chunk`. The certificate compares the symbolic recurrence with the
symbolic UT algorithm (anatomy.verify.symbolic_delta) and, in float64, the compiled
recurrence (the parallel form) with the compiled chunked kernel (the chunked form).
"""

from __future__ import annotations

from collections.abc import Iterator

from anatomy.ir import Diagram

from ..edit import Edit
from ..site import EXACT, Rule, Site
from .masks import DEFAULT_CHUNK

RECURRENCE = 1  # the chunk size that is the recurrence itself


def _with_chunk(d: Diagram, box_id: str, chunk: int) -> Diagram:
    e = Edit(d)
    b = d.box(box_id)
    e.replace(b.id, "delta_rule", b.inputs, **{**dict(b.attrs), "chunk": chunk})
    return e.done()


def find_delta_unchunk(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op == "delta_rule" and b.attr("chunk", DEFAULT_CHUNK) != RECURRENCE:
            yield Site("delta_unchunk", b.id)


def delta_unchunk(d: Diagram, site: Site) -> Diagram:
    return _with_chunk(d, site.box, RECURRENCE)


def find_delta_chunk(d: Diagram) -> Iterator[Site]:
    for b in d.boxes:
        if b.op == "delta_rule" and b.attr("chunk", DEFAULT_CHUNK) == RECURRENCE:
            yield Site("delta_chunk", b.id, (DEFAULT_CHUNK,))


def delta_chunk(d: Diagram, site: Site) -> Diagram:
    return _with_chunk(d, site.box, site.params[0])


def _core(gate: str, log_a: str, chunk: int) -> str:
    """A delta-rule witness; k / 2 keeps the state bounded at the numeric certificate's
    lengths (random k and beta, not normalised)."""
    return f"""
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p], beta[t, h]{gate}) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
  kk[t, h, n] = k / 2
  y[t, h, p] = delta_rule(q, kk, v, beta, {log_a}, t, chunk={chunk})
"""


_GATES = {"deltanet": ("", "0"), "gated": (", log_a[t, h]", "log_a"),
          "kda": (", log_a[t, h, n]", "log_a")}

RULES = [
    Rule("delta_unchunk", EXACT,
         "delta_rule(q, k, v, β, log α, chunk=C) = the recurrence S_t = (I − β_t k_t k_tᵀ) "
         "diag(α_t) S_{t−1} + β_t k_t v_tᵀ, o_t = q_t S_t (chunk=1): the chunked WY/UT "
         "algorithm is the delta rule, for any chunk size and gate (none, per head, per "
         "channel)",
         find_delta_unchunk, delta_unchunk, normalising=True,
         witnesses=tuple(_core(*_GATES[g], c) for g, c in (
             ("deltanet", 2), ("gated", 3), ("kda", 2), ("kda", 64))),
         numeric_forms=("chunked", "parallel")),
    Rule("delta_chunk", EXACT,
         "the delta-rule recurrence (chunk=1) = delta_rule(..., chunk=C), C = 64: its chunked "
         "WY/UT algorithm (the compiler's chunked form)",
         find_delta_chunk, delta_chunk,
         witnesses=tuple(_core(*_GATES[g], 1) for g in ("deltanet", "gated", "kda")),
         numeric_forms=("parallel", "chunked")),
]
