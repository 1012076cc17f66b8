"""Proofs of equivalence: chains of rule applications that meet, and refusals.

`find_proof(a, b)` rewrites both diagrams to the normal form of the exact normalising rules
and compares the results up to names and statement order; with `allow_approximate`, it also
tries approximate rules (each flagged in the proof). A `Proof` prints as text (each step:
rule, where it applied, the diagram after it as .anat) and saves as JSON that
`anatomy.verify.verify_proof` replays without searching. When no chain is found it returns
a `Refusal`; `anatomy.verify.prove` (the verification layer, above rewriting and lowering)
adds a numeric counterexample where the two diagrams differ on random inputs.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anatomy.canonical import same_structure, structure_hash
from anatomy.errors import AnatError
from anatomy.ir import Diagram
from anatomy.printer import print_diagram

from .domain import on_common_domain
from .proof_file import FORMAT, stored_path
from .rules import APPROXIMATE, NORMALISING, RULES
from .site import Site

MAX_STEPS = 400


@dataclass(frozen=True)
class Step:
    """One rule application and the diagram it gave."""

    site: Site
    diagram: Diagram

    @property
    def rule(self):
        return RULES[self.site.rule]


@dataclass
class Rewriting:
    """A diagram rewritten step by step: where it started, the steps, where it ended."""

    start: Diagram
    steps: list[Step] = field(default_factory=list)

    @property
    def diagram(self) -> Diagram:
        return self.steps[-1].diagram if self.steps else self.start

    def then(self, site: Site) -> Rewriting:
        after = RULES[site.rule].apply(self.diagram, site)
        return Rewriting(self.start, self.steps + [Step(site, after)])


def normalise(d: Diagram, max_steps: int = MAX_STEPS) -> Rewriting:
    """Apply the normalising rules (in table order, first site first) until none applies."""
    calls = d.shapes.expanded_calls() if d.shapes is not None else 0
    if calls > max_steps:  # each call is inlined by one step: refuse before the first
        raise AnatError(f"{d.name} makes {calls:,} composite calls when inlined, more than "
                        f"the {max_steps} steps a normal form may take",
                        hint="normal forms, canonical forms and proofs inline every call; "
                             "compare the callees instead")
    r = Rewriting(d)
    for _ in range(max_steps):
        site = next((s for rule in NORMALISING for s in rule.find(r.diagram)), None)
        if site is None:
            return r
        r = r.then(site)
    raise AnatError(f"normalising {d.name} did not finish in {max_steps} steps",
                    hint="this is a bug in the rule table: please report the diagram")


@dataclass
class Side:
    """One side of a claim: a diagram and where it came from (for the JSON proof)."""

    diagram: Diagram
    file: str | None = None
    name: str | None = None
    dims: dict[str, int] = field(default_factory=dict)

    def label(self) -> str:
        return f"{self.file}:{self.name}" if self.file else self.diagram.name

    def to_json(self, proof: str | Path | None = None) -> dict[str, Any]:
        """The side as a proof records it; `proof`: where the proof is saved (the file is
        then stored relative to it)."""
        file = stored_path(proof, self.file) if proof and self.file else self.file
        return {"file": file, "name": self.name or self.diagram.name, "dims": self.dims,
                "sha256": _sha256(self.file) if self.file else None,
                "text": print_diagram(self.diagram)}


@dataclass
class Proof:
    """A = B: the left side rewritten to a diagram the right side also rewrites to."""

    left: Side
    right: Side
    left_steps: Rewriting
    right_steps: Rewriting
    seconds: float = 0.0
    note: str = ""  # the domain of the claim, when the signatures tie axes (domain.py)

    @property
    def approximate(self) -> bool:
        return any(s.rule.kind == APPROXIMATE
                   for s in self.left_steps.steps + self.right_steps.steps)

    @property
    def rules_used(self) -> list[str]:
        return sorted({s.site.rule for s in self.left_steps.steps + self.right_steps.steps})

    def chain(self) -> list[tuple[str, Step]]:
        """The steps in reading order: left forwards, then right backwards. Each right step
        is shown with the diagram *before* it (the chain walks towards B)."""
        out = [("forward", s) for s in self.left_steps.steps]
        rs = self.right_steps
        before = [rs.start] + [s.diagram for s in rs.steps[:-1]]
        for s, d in reversed(list(zip(rs.steps, before))):
            out.append(("backward", Step(s.site, d)))
        return out

    def render(self, show_diagrams: bool = True) -> str:
        sign = "~" if self.approximate else "="
        lines = [f"claim: {self.left.label()} {sign} {self.right.label()}",
                 (f"proved in {_steps(len(self.chain()))} ({self.seconds:.2f} s); rules: "
                  f"{', '.join(self.rules_used) or 'none (same up to names and order)'}")]
        lines += [self.note, ""] if self.note else [""]
        if show_diagrams:
            lines += [f"{self.left.label()}:", _indent(print_diagram(self.left.diagram))]
        for i, (direction, step) in enumerate(self.chain(), 1):
            rule = step.rule
            flag = "  [APPROXIMATE]" if rule.kind == APPROXIMATE else ""
            how = "" if direction == "forward" else ", read right to left"
            lines.append(f"step {i}: {rule.name} at `{step.site.box}`{how}{flag}")
            lines.append(f"  {rule.statement}")
            if show_diagrams:
                lines.append(_indent(print_diagram(step.diagram)))
        lines.append(f"= {self.right.label()}  ∎")
        return "\n".join(lines)

    def to_json(self, path: str | Path | None = None) -> dict[str, Any]:
        """The proof as JSON (`proof_file.SCHEMA`); `path`: where it is saved (files are
        stored relative to it)."""
        def steps(r: Rewriting):
            return [{**s.site.to_json(), "kind": s.rule.kind, "statement": s.rule.statement,
                     "hash": structure_hash(s.diagram), "text": print_diagram(s.diagram)}
                    for s in r.steps]
        return {"format": FORMAT, "approximate": self.approximate,
                "left": self.left.to_json(path), "right": self.right.to_json(path),
                "left_steps": steps(self.left_steps), "right_steps": steps(self.right_steps),
                "meet": structure_hash(self.left_steps.diagram)}

    def save(self, path: str | Path) -> None:
        text = json.dumps(self.to_json(path), indent=1, ensure_ascii=False) + "\n"
        Path(path).write_text(text, encoding="utf-8")


@dataclass
class Refusal:
    """No proof: the normal forms differ; with a counterexample when one was found."""

    left: Side
    right: Side
    left_normal: Diagram
    right_normal: Diagram
    counterexample: Any  # anatomy.verify.numeric.Counterexample | None
    seconds: float = 0.0
    note: str = ""

    def render(self) -> str:
        lines = [f"claim: {self.left.label()} = {self.right.label()}",
                 (f"refused ({self.seconds:.2f} s): no chain of exact rules connects them; "
                  "their normal forms differ.")]
        if self.counterexample is not None:
            lines += ["they are not equal:", _indent(self.counterexample.render())]
        elif self.note:
            lines.append(self.note)
        lines += ["", f"normal form of {self.left.label()}:", _indent(print_diagram(self.left_normal)),
                  f"normal form of {self.right.label()}:",
                  _indent(print_diagram(self.right_normal))]
        return "\n".join(lines)


def find_proof(a: Diagram | Side, b: Diagram | Side, allow_approximate: bool = False
               ) -> Proof | Refusal:
    """Search for a chain of rules between two diagrams (exact rules only, unless
    `allow_approximate`); a Refusal, without a counterexample, when there is none."""
    start = time.perf_counter()
    left = a if isinstance(a, Side) else Side(a)
    right = b if isinstance(b, Side) else Side(b)
    _check_signatures(left, right)
    da, db, domain = on_common_domain(left.diagram, right.diagram)
    ln, rn = normalise(da), normalise(db)
    if same_structure(ln.diagram, rn.diagram):
        return Proof(left, right, ln, rn, time.perf_counter() - start, domain)
    if allow_approximate:
        found = _approximate_search(ln, rn)
        if found is not None:
            return Proof(left, right, *found, seconds=time.perf_counter() - start,
                         note=domain)
    return Refusal(left, right, ln.diagram, rn.diagram, None,
                   time.perf_counter() - start, domain)


def _approximate_search(ln: Rewriting, rn: Rewriting, depth: int = 2):
    """Breadth-first over approximate rules (each followed by normalisation) from both
    normal forms; returns the two rewritings when they meet."""
    frontier = {"left": [ln], "right": [rn]}
    seen: dict[str, dict[str, Rewriting]] = {
        "left": {structure_hash(ln.diagram): ln}, "right": {structure_hash(rn.diagram): rn}}
    approx = [r for r in RULES.values() if r.kind == APPROXIMATE]
    for _ in range(depth):
        for side, other in (("left", "right"), ("right", "left")):
            nxt = []
            for r in frontier[side]:
                for rule in approx:
                    for site in rule.find(r.diagram):
                        stepped = r.then(site)
                        rest = normalise(stepped.diagram)
                        full = Rewriting(r.start, stepped.steps + rest.steps)
                        h = structure_hash(full.diagram)
                        if h in seen[side]:
                            continue
                        seen[side][h] = full
                        nxt.append(full)
                        match = seen[other].get(h)
                        if match is not None and same_structure(full.diagram, match.diagram):
                            return (full, match) if side == "left" else (match, full)
            frontier[side] = nxt
    return None


def _check_signatures(left: Side, right: Side) -> None:
    a, b = left.diagram.signature, right.diagram.signature
    shape = [len(p.axes) for p in a.inputs], [len(p.axes) for p in a.outputs]
    other = [len(p.axes) for p in b.inputs], [len(p.axes) for p in b.outputs]
    if shape != other:
        raise AnatError(f"{left.label()} {a} and {right.label()} {b} do not have the same "
                        "signature, so they cannot be equal",
                        hint="compare anatomies with the same inputs and outputs")


def _sha256(file: str) -> str | None:
    try:
        return hashlib.sha256(Path(file).read_bytes()).hexdigest()
    except OSError:
        return None


def _indent(text: str) -> str:
    return "\n".join("    " + line if line else "" for line in text.rstrip().splitlines())


def _steps(n: int) -> str:
    return f"{n} step" + ("" if n == 1 else "s")
