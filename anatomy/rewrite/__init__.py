"""The rewrite engine: certified rules over diagrams, proofs of equivalence, normal forms,
and the rewrites the compiler lowers with.

- `RULES` (anatomy.rewrite.rules): the table of rules, each exact or approximate, with a
  one-line statement and the witnesses that certify it (`anatomy.verify.certify`).
- `normalise(d)`: the normal form proofs and canonical forms meet at;
  `canonical(d)`: the hash of that normal form (`anatomy.canonical`).
- `find_proof(a, b)`: a `Proof` (printable, saved as JSON, replayed by
  `anatomy.verify.verify_proof`) or a `Refusal`; `anatomy.verify.prove` adds a numeric
  counterexample to a refusal (numbers need the lowering, a layer above this one).
- `lower(d, form=...)`: the form's lowering rules applied wherever they match (masked
  linear attention becomes the chunked `ssd` box, whose state gives the recurrent form;
  softmax attention becomes one fused `attention` box in the auto form).
"""

from __future__ import annotations

import dataclasses

from anatomy.canonical import structure_hash
from anatomy.ir import Diagram

from .proof import Proof, Refusal, Rewriting, Side, find_proof, normalise
from .proof import normalise as _normalise
from .rules import LOWERING, NORMALISING, RULES
from .site import APPROXIMATE, EXACT, Rule, Site

MAX_LOWERING_STEPS = 200


def canonical(d: Diagram, normalise: bool = True) -> str:
    """One hash for diagrams equal up to wire renaming, statement order and (with
    `normalise`) the normalising subset of the exact rewrite rules: the structure hash
    (anatomy.canonical.structure_hash) of the normal form."""
    if normalise:
        d = _normalise(d).diagram
    return structure_hash(d)


def lower(d: Diagram, shapes=None, form: str = "chunked") -> Diagram:
    """Apply the lowering rules of an execution form (`LOWERING[form]`) at every site
    (checked at `shapes`' dims when given)."""
    if shapes is not None and d.shapes is not shapes:
        d = dataclasses.replace(d, shapes=shapes)
    rules = LOWERING[form]
    for _ in range(MAX_LOWERING_STEPS):
        site = next((s for rule in rules for s in rule.find(d)), None)
        if site is None:
            return d
        d = RULES[site.rule].apply(d, site)
    raise AssertionError("lowering rules did not finish")  # pragma: no cover


__all__ = ["APPROXIMATE", "EXACT", "LOWERING", "NORMALISING", "RULES", "Proof", "Refusal",
           "Rewriting", "Rule", "Side", "Site", "canonical", "find_proof", "lower", "normalise"]
