"""Running graphviz's `dot` layout, with a clear error where it is not installed."""

from __future__ import annotations

import graphviz

from ..errors import AnatError


def to_svg_text(graph: graphviz.Digraph) -> str:
    """Lay the graph out with `dot` and return the SVG document."""
    try:
        return graph.pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound:
        raise AnatError(
            "rendering needs graphviz's `dot` program, which is not installed (not on PATH)",
            hint="install it: apt-get install graphviz (Debian/Ubuntu), brew install graphviz "
                 "(macOS); `anatomy render --format dot` writes the DOT source without it"
        ) from None
