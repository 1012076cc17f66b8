"""Certificates for rules: a rule is applied to each of its witness diagrams at every site,
and the diagram before is compared with the diagram after

- symbolically (sympy, `anatomy.verify.symbolic`) at a small sequence length: every output
  entry of the difference simplifies to zero;
- numerically (both sides compiled, float64, same inputs and parameters) at longer
  sequences: relative RMSE below `numeric.TOLERANCE`.

An exact rule is certified when every comparison agrees; an approximate rule is certified
*as approximate* when some comparison shows that it changes the function (so it can never
pass for exact). A wrong rule, or a witness the rule does not apply to, fails.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from anatomy.ir import Diagram
from anatomy.rewrite.rules import RULES
from anatomy.rewrite.site import APPROXIMATE, Rule

from .numeric import TOLERANCE, distance
from .symbolic import Unsupported, symbolically_equal

SYMBOLIC_LENGTH = 4
NUMERIC_LENGTHS = (64, 512)


@dataclass
class Certificate:
    rule: str
    kind: str
    sites: int = 0
    symbolic: list[bool] = field(default_factory=list)
    worst_numeric: float = 0.0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def changes_function(self) -> bool:
        return not all(self.symbolic) or self.worst_numeric > TOLERANCE

    @property
    def ok(self) -> bool:
        if self.problems or not self.sites:
            return False
        if self.kind == APPROXIMATE:
            return self.changes_function
        return all(self.symbolic) and self.worst_numeric <= TOLERANCE

    def render(self) -> str:
        status = "certified" if self.ok else "REJECTED"
        what = "changes the function (approximate)" if self.kind == APPROXIMATE \
            else "equal"
        sym = f"sympy {sum(self.symbolic)}/{len(self.symbolic)} equal"
        line = (f"{self.rule:<20} {self.kind:<11} {status:<9} {self.sites} sites, {sym}, "
                f"max numeric rel RMSE {self.worst_numeric:.1e}  ({what}; "
                f"{self.seconds:.1f} s)")
        return "\n".join([line] + [f"    {p}" for p in self.problems])


def witness_diagram(text: str) -> Diagram:
    from anatomy.program import load
    program = load(text)
    return program[program.own[-1]]


def _through(d: Diagram, name: str) -> Diagram:
    """The diagram rule `name` makes of a witness, applied at every site it finds."""
    other = RULES[name]
    while sites := other.sites(d):
        d = other.apply(d, sites[0])
    return d


def certify(rule: Rule, symbolic_length: int = SYMBOLIC_LENGTH,
            numeric_lengths: tuple[int, ...] = NUMERIC_LENGTHS) -> Certificate:
    """Check a rule on its witnesses (see the module docstring)."""
    start = time.perf_counter()
    cert = Certificate(rule.name, rule.kind)
    for w, text in enumerate(rule.witnesses, 1):
        before = witness_diagram(text)
        if rule.witnesses_through is not None:
            before = _through(before, rule.witnesses_through)
        sites = rule.sites(before)
        if not sites:
            cert.problems.append(f"witness {w}: the rule does not apply")
        for site in sites:
            cert.sites += 1
            after = rule.apply(before, site)
            try:
                equal, where = symbolically_equal(before, after, symbolic_length)
            except Unsupported as e:
                cert.problems.append(f"witness {w}: {e}")
                continue
            cert.symbolic.append(equal)
            if not equal and rule.kind != APPROXIMATE:
                cert.problems.append(f"witness {w}, {site.describe()}: differs at {where}")
            for length in numeric_lengths:
                found = distance(before, after, length, forms=rule.numeric_forms)
                if found is None:
                    cert.problems.append(f"witness {w}: parameters could not be matched")
                    break
                cert.worst_numeric = max(cert.worst_numeric, found[0])
    if rule.kind != APPROXIMATE and cert.worst_numeric > TOLERANCE:
        cert.problems.append(f"numerically different (relative RMSE {cert.worst_numeric:.2e})")
    cert.seconds = time.perf_counter() - start
    return cert
