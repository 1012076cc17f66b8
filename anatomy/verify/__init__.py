"""Verification: the layer above both the rewrite engine and the lowering, where diagrams
are compiled and run to check what the rules claim.

- `prove(a, b)` / `verify_proof(path)`: proofs (anatomy.rewrite's chains of rules) with a
  numeric counterexample for a refusal and a numeric check of a replayed proof;
- `certify(rule)`: a rule checked on its witnesses, symbolically (sympy,
  `anatomy.verify.symbolic`) and numerically (`anatomy.verify.numeric`);
- `numeric.search(a, b)`: two diagrams compiled (float64, parallel form) and compared on
  random inputs.
"""

from __future__ import annotations

from .certify import Certificate, certify
from .prove import Verification, prove, verify_proof

__all__ = ["Certificate", "Verification", "certify", "prove", "verify_proof"]
