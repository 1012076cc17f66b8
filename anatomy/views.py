"""The convenience layer: `Diagram.to_text()`, `str(diagram)`, `Diagram.check(**dims)`,
`Diagram.to_svg()` and Jupyter's `_repr_svg_`.

The IR (anatomy.ir) imports none of the printer, the shape checker or the renderer; these
methods are attached to `Diagram` here, above all three, when the package is imported
(anatomy/__init__.py imports this module first thing). The project's own code calls the
functions they stand for: `printer.print_diagram`, `shapes.check`, `render.to_svg`.
"""

from __future__ import annotations

from .ir import Diagram
from .printer import print_diagram
from .shapes import Shapes, check


def to_text(self: Diagram) -> str:
    """The diagram as .anat text (`anatomy.printer.print_diagram`)."""
    return print_diagram(self)


def check_dims(self: Diagram, **dims: int) -> Shapes:
    """Infer and check every axis size at these dims, defaults otherwise
    (`anatomy.shapes.check`)."""
    return check(self, dims)


def to_svg(self: Diagram, depth: int = 1, highlight: set[str] = frozenset()) -> str:
    """The diagram drawn as an SVG string diagram (needs graphviz; docs/rendering.md)."""
    from .render import to_svg as draw  # graphviz: only when drawing
    return draw(self, depth, highlight)


def _repr_svg_(self: Diagram) -> str:
    """Jupyter shows a diagram as its picture."""
    return to_svg(self)


Diagram.to_text = to_text
Diagram.__str__ = to_text
Diagram.check = check_dims
Diagram.to_svg = to_svg
Diagram._repr_svg_ = _repr_svg_
