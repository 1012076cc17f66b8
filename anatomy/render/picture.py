"""One diagram's picture, as DOT source or as an SVG document."""

from __future__ import annotations

from ..ir import Diagram
from .graph import build
from .layout import to_svg_text


def to_dot(diagram: Diagram, depth: int = 1, highlight: set[str] = frozenset()) -> str:
    """The graphviz DOT source of the picture (needs no graphviz install)."""
    return build(diagram, depth, highlight).source


def to_svg(diagram: Diagram, depth: int = 1, highlight: set[str] = frozenset()) -> str:
    """The picture as an SVG document: composite boxes expanded `depth - 1` levels, boxes
    whose ids are in `highlight` outlined in red. Same diagram, same bytes."""
    return to_svg_text(build(diagram, depth, highlight))
