"""What a rewrite rule is: a named, kinded, certified equation between diagrams, applied at
sites that its matcher finds.

`Rule.find(diagram)` yields the `Site`s where the rule applies (a box, and the choice the
rule makes there, as plain data); `Rule.apply(diagram, site)` returns the rewritten diagram.
Sites are plain data so that proofs can record them and `verify-proof` can replay them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from anatomy.ir import Diagram

EXACT, APPROXIMATE = "exact", "approximate"


@dataclass(frozen=True)
class Site:
    """Where a rule applies: the box it rewrites and the rule's choice there."""

    rule: str
    box: str
    params: tuple = ()

    def describe(self) -> str:
        extra = f" {self.params}" if self.params else ""
        return f"{self.rule} at `{self.box}`{extra}"

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "box": self.box, "params": _listify(self.params)}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Site:
        return Site(data["rule"], data["box"], _tuplify(data.get("params", [])))


def _listify(x):
    return [_listify(v) for v in x] if isinstance(x, tuple) else x


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


@dataclass(frozen=True)
class Rule:
    """One rewrite rule: `lhs = rhs` (exact) or `lhs ~> rhs` (approximate).

    `statement` is the equation in one line; `witnesses` are .anat programs whose last
    anatomy the rule applies to, used to certify it (anatomy.verify.certify).
    `normalising`: part of the normal form that proofs and canonical forms rewrite to.
    `numeric_forms`: the compiled forms (anatomy.compile's `form`) the certificate runs the
    witness before and after the rewrite in, for a rule about a form: the delta rule's
    chunked algorithm is compared with its recurrence (the parallel form).
    `witnesses_through`: the name of a rule whose result on each witness is what this rule
    is certified on (for a box the language does not write out, e.g. `attention`'s score
    expression: `unfuse_attention` undoes `fuse_attention` on its witnesses).
    """

    name: str
    kind: str
    statement: str
    find: Callable[[Diagram], Iterator[Site]] = field(repr=False)
    rewrite: Callable[[Diagram, Site], Diagram] = field(repr=False)
    witnesses: tuple[str, ...] = field(default=(), repr=False)
    normalising: bool = False
    numeric_forms: tuple[str, str] = ("parallel", "parallel")
    witnesses_through: str | None = None

    def sites(self, d: Diagram) -> list[Site]:
        return list(self.find(d))

    def apply(self, d: Diagram, site: Site) -> Diagram:
        return self.rewrite(d, site)
