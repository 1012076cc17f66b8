"""Proofs as pictures: one SVG per rewrite step, the rewritten boxes outlined in red, and
an index.html that steps through them with each rule's name and statement.

The rewrite engine hands over its steps; `render_proof` only draws them. Step 0 is the
starting diagram (rule "start"). `changed_boxes(before, after)` computes a step's
highlight from the diagrams on both sides of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from ..ir import Diagram
from . import page
from .output import write_text
from .picture import to_svg

KINDS = ("exact", "approximate")


@dataclass(frozen=True)
class Step:
    """One proof step: the diagram after applying `rule`, and the ids of the boxes the
    rule rewrote (box id = first output wire's name)."""

    diagram: Diagram
    highlight: frozenset[str] = frozenset()
    rule: str = "start"
    statement: str = ""
    kind: str = "exact"


def as_step(item: Any) -> Step:
    """A Step from a Step, a tuple in Step's field order, or any object with its fields."""
    if isinstance(item, Step):
        step = item
    elif isinstance(item, tuple):
        step = Step(*item)
    else:
        step = Step(item.diagram, item.highlight, item.rule, item.statement,
                    getattr(item, "kind", "exact"))
    step = Step(step.diagram, frozenset(step.highlight), step.rule, step.statement, step.kind)
    if step.kind not in KINDS:
        raise ValueError(f"proof step kind must be one of {KINDS}, not {step.kind!r}")
    ids = {b.id for b in step.diagram.boxes}
    unknown = sorted(step.highlight - ids)
    if unknown:
        raise ValueError(f"highlighted boxes {unknown} are not boxes of {step.diagram.name}")
    return step


def changed_boxes(before: Diagram, after: Diagram) -> frozenset[str]:
    """The ids of the boxes of `after` that `before` does not have as they are (op, inputs,
    outputs, attributes): the region a rewrite step changed, to highlight."""
    old = set(before.boxes)
    return frozenset(b.id for b in after.boxes if b not in old)


def render_proof(steps: Iterable[Any], out_dir: Path | str, depth: int = 1) -> Path:
    """Write `step-NN.svg` for every step and `index.html` stepping through them into
    `out_dir`; returns the index's path."""
    out_dir = Path(out_dir)
    steps = [as_step(s) for s in steps]
    if not steps:
        raise ValueError("a proof needs at least its starting diagram")
    sections = []
    for n, step in enumerate(steps):
        svg = f"step-{n:02d}.svg"
        write_text(out_dir / svg, to_svg(step.diagram, depth, step.highlight))
        links = [f'<a href="#step-{n - 1}">← step {n - 1}</a>' if n else "",
                 f'<a href="#step-{n + 1}">step {n + 1} →</a>' if n + 1 < len(steps) else ""]
        sections.append(
            f'<section id="step-{n}"><h2>Step {n}: {escape(step.rule)}</h2>'
            f"<figure>{page.image(svg, f'step {n}: {step.rule}')}<figcaption>"
            f'<b>{escape(step.rule)}</b> <span class="{step.kind}">({step.kind})</span>'
            f"{': ' + escape(step.statement) if step.statement else ''}"
            f"</figcaption></figure><nav>{''.join(links)}</nav></section>")
    first, last = steps[0].diagram.name, steps[-1].diagram.name
    approximate = sum(s.kind == "approximate" for s in steps)
    verdict = "exact" if not approximate else f"{approximate} approximate step(s)"
    body = (f"<h1>Proof: {escape(first)} → {escape(last)}</h1>"
            f'<p class="muted">{len(steps) - 1} rewrite step(s), {verdict}. '
            f"Boxes outlined in red are the ones the step's rule rewrote.</p>"
            + "".join(sections))
    index = out_dir / "index.html"
    write_text(index, page.document(f"proof: {first} → {last}", body))
    return index


def proof_pictures(proof: Any, out_dir: str | Path) -> Path:
    """A proof (anatomy.rewrite.Proof) drawn: one SVG per step, the rewritten boxes
    outlined, and an index.html stepping through them with each rule's statement."""
    pictures = [Step(proof.left.diagram, rule="start",
                     statement=f"{proof.left.label()}, to be shown equal to "
                               f"{proof.right.label()}")]
    previous = proof.left.diagram
    for direction, step in proof.chain():
        how = "" if direction == "forward" else " (read right to left)"
        pictures.append(Step(step.diagram, changed_boxes(previous, step.diagram),
                             step.rule.name + how, step.rule.statement, step.rule.kind))
        previous = step.diagram
    return render_proof(pictures, out_dir)
