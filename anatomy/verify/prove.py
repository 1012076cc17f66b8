"""Proofs with their numeric side: `prove` (a chain of rules, or a refusal with a numeric
counterexample) and `verify_proof` (a saved proof replayed, then both sides compared on
random inputs). The chains themselves are the rewrite engine's (anatomy.rewrite.proof);
the numbers come from compiling both sides (anatomy.verify.numeric)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from anatomy.canonical import same_structure, structure_hash
from anatomy.ir import Diagram
from anatomy.printer import print_diagram
from anatomy.program import load
from anatomy.rewrite.domain import on_common_domain
from anatomy.rewrite.proof import Proof, Refusal, Side, find_proof
from anatomy.rewrite.proof_file import changed, locate
from anatomy.rewrite.proof_file import read as read_proof
from anatomy.rewrite.rules import APPROXIMATE, RULES
from anatomy.rewrite.site import Site

from .numeric import TOLERANCE, search


def prove(a: Diagram | Side, b: Diagram | Side, allow_approximate: bool = False
          ) -> Proof | Refusal:
    """Search for a chain of rules between two diagrams (exact rules only, unless
    `allow_approximate`); without one, a Refusal with a numeric counterexample when the
    diagrams differ on random inputs (and a note saying what was found otherwise)."""
    start = time.perf_counter()
    result = find_proof(a, b, allow_approximate)
    if isinstance(result, Proof):
        return result
    found = search(result.left.diagram, result.right.diagram)
    note = "\n".join(x for x in (found.note, result.note) if x)
    return replace(result, counterexample=found.counterexample, note=note,
                   seconds=time.perf_counter() - start)


@dataclass
class Verification:
    """The outcome of replaying a saved proof, with what was checked."""

    ok: bool
    messages: list[str]

    def render(self) -> str:
        return "\n".join(self.messages)


def verify_proof(path: str | Path, allow_unpinned: bool = False) -> Verification:
    """Replay a saved proof without searching: reload both sides (checking the files are
    the ones proved), re-apply every recorded step and check it gives the recorded
    diagram (its hash and its printed text), with the rule's recorded kind and statement,
    check the two chains meet where the proof says, and compare the two sides numerically.
    The file is checked against its schema first (`proof_file`); a side's file that is not
    pinned by a sha256 is refused unless `allow_unpinned`."""
    data = read_proof(path)
    messages: list[str] = []

    def fail(message: str) -> Verification:
        return Verification(False, messages + [message])
    ends, starts, kinds = [], [], []
    for side in ("left", "right"):
        info = data[side]
        file = locate(path, side, info, allow_unpinned)
        if changed(file, info):
            return fail(f"{info['file']} changed since the proof was made (its sha256 "
                        "differs)")
        d = load(file, strict_dims=False, **info["dims"])[info["name"]]
        if print_diagram(d) != info["text"]:
            return fail(f"{side}: the recorded text is not {info['file']}:{info['name']} "
                        "as printed")
        starts.append(d)
    for side, d in zip(("left", "right"), on_common_domain(*starts)[:2]):
        for i, step in enumerate(data[f"{side}_steps"], 1):
            site = Site.from_json(step)
            rule = RULES.get(site.rule)
            if rule is None:
                return fail(f"{side} step {i}: unknown rule {site.rule}")
            if (step["kind"], step["statement"]) != (rule.kind, rule.statement):
                return fail(f"{side} step {i}: the recorded kind or statement is not rule "
                            f"{rule.name}'s")
            if site not in rule.sites(d):
                return fail(f"{side} step {i}: {site.describe()} does not apply")
            d = rule.apply(d, site)
            if structure_hash(d) != step["hash"] or print_diagram(d) != step["text"]:
                return fail(f"{side} step {i}: {site.describe()} gives another diagram than "
                            "the proof records")
            kinds.append(rule.kind)
        messages.append(f"{side}: {len(data[f'{side}_steps'])} steps replayed")
        ends.append(d)
    if not same_structure(*ends) or structure_hash(ends[0]) != data["meet"]:
        return fail("the two chains do not meet where the proof says")
    if data["approximate"] != (APPROXIMATE in kinds):
        return fail("the proof's `approximate` flag does not match its steps")
    messages.append("the chains meet (same diagram up to names and statement order)")
    if not data["approximate"]:
        cex = search(*starts).worst
        if cex is not None and not cex.rel_rmse <= TOLERANCE:
            return fail("but the two sides differ numerically:\n" + cex.render())
        messages.append("numeric check: the two sides agree on random inputs")
    if allow_unpinned and any(data[s]["sha256"] is None for s in ("left", "right")):
        messages.append("(a side was not pinned by a sha256: replayed against the file as it "
                        "is now)")
    messages.append("proof verified" + (" (with approximate steps)"
                                        if data["approximate"] else ""))
    return Verification(True, messages)
