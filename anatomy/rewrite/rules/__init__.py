"""The table of rewrite rules: every equation the rewrite engine knows, by name.

Read it as the whole optimiser: each rule has a name, a kind (exact, or approximate as in
the Anatomy paper's universal-approximation steps), a one-line statement, a matcher, a
rewrite and the witnesses that certify it (`anatomy rules` prints the table).
`NORMALISING` rules, applied in this order until none applies, give the normal form that
proofs and canonical forms meet at; `LOWERING[form]` are the rules the compiler applies
to pick each execution form's structured boxes (chunked kernels, fused softmax attention).
"""

from __future__ import annotations

from ..site import APPROXIMATE, EXACT, Rule, Site
from . import (
               algebra,
               approximate,
               attention,
               bonus,
               channels,
               delta,
               masks,
               normalisers,
               sequence,
               structure,
)

RULES: dict[str, Rule] = {r.name: r for r in (
    structure.RULES + algebra.RULES + normalisers.RULES + masks.RULES + channels.RULES
    + delta.RULES + sequence.RULES + attention.RULES + bonus.RULES
    + approximate.RULES)}

# the order matters only for which normal-form path is printed, not for where it ends
NORMALISING: tuple[Rule, ...] = tuple(RULES[n] for n in (
    "inline", "share_identity", "unit_axis", "unfuse_attention", "unfuse_bonus",
    "unchunk", "unscan", "pow_unit", "mul_zero",
    "add_zero", "mul_one", "fold_numbers", "div_scalar", "power", "causal_decay", "log_causal",
    "flip_flip",
    "flip_shift", "flip_into", "shift_into", "decay_flip", "flip_sum", "distribute", "flatten",
    "normalise_scale", "decay_compose", "decay_channel", "delta_gate", "delta_unchunk"))

# by execution form: parallel runs every box as written
LOWERING: dict[str, tuple[Rule, ...]] = {
    "parallel": (),
    "chunked": (RULES["chunk"], RULES["fuse_bonus"]),
    "auto": (RULES["chunk"], RULES["fuse_bonus"], RULES["fuse_attention"]),
}

__all__ = ["APPROXIMATE", "EXACT", "LOWERING", "NORMALISING", "RULES", "Rule", "Site"]
