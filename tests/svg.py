"""Reading graphviz SVG back as a person sees it: node, edge and cluster groups with their
text and their bounding boxes (for the rendering tests)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from itertools import combinations

NS = "{http://www.w3.org/2000/svg}"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class Shape:
    id: str
    classes: set[str]
    texts: list[str]
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (SVG user units)
    stroke: set[str]

    @property
    def text(self) -> str:
        return " ".join(self.texts)

    def inside(self, other: Shape) -> bool:
        x0, y0, x1, y1 = self.box
        X0, Y0, X1, Y1 = other.box
        return X0 <= x0 and Y0 <= y0 and x1 <= X1 and y1 <= Y1


@dataclass
class Text:
    text: str
    x: float
    y: float
    size: float
    anchor: str

    def bbox(self) -> tuple[float, float, float, float]:
        """A generous estimate of the text's extent (Helvetica: ~0.55 em per character)."""
        width = 0.55 * self.size * len(self.text)
        x0 = {"start": self.x, "middle": self.x - width / 2, "end": self.x - width}[self.anchor]
        return x0, self.y - 0.75 * self.size, x0 + width, self.y + 0.2 * self.size


def _points(element: ET.Element) -> list[tuple[float, float]]:
    tag = element.tag.removeprefix(NS)
    if tag == "ellipse":
        cx, cy, rx, ry = (float(element.get(k)) for k in ("cx", "cy", "rx", "ry"))
        return [(cx - rx, cy - ry), (cx + rx, cy + ry)]
    raw = element.get("points") if tag == "polygon" else element.get("d") if tag == "path" \
        else None
    if raw is None:
        return []
    numbers = [float(n) for n in NUMBER.findall(raw)]
    return list(zip(numbers[0::2], numbers[1::2]))


def _shape(group: ET.Element) -> Shape:
    points, strokes = [], set()
    for element in group:
        tag = element.tag.removeprefix(NS)
        if tag in ("polygon", "path", "ellipse"):
            points.extend(_points(element))
            strokes.add(element.get("stroke"))
    texts = ["".join(t.itertext()) for t in group.iter(NS + "text")]
    if not points:  # a shapeless node (shape=plain): where its text is
        points = [(float(t.get("x")), float(t.get("y"))) for t in group.iter(NS + "text")]
    xs, ys = [p[0] for p in points] or [0.0], [p[1] for p in points] or [0.0]
    return Shape(group.get("id"), set(group.get("class", "").split()), texts,
                 (min(xs), min(ys), max(xs), max(ys)), strokes)


@dataclass
class Picture:
    root: ET.Element
    nodes: dict[str, Shape]     # by node id (box-..., copy-...)
    edges: dict[str, Shape]     # by edge id (wire-NAME.N)
    clusters: dict[str, Shape]  # by cluster id (plate-..., composite-...)

    def texts(self) -> list[Text]:
        out = []
        for t in self.root.iter(NS + "text"):
            out.append(Text("".join(t.itertext()), float(t.get("x")), float(t.get("y")),
                            float(t.get("font-size")), t.get("text-anchor", "start")))
        return out

    def plates_around(self, node_id: str) -> set[str]:
        """The axes of the plates whose outline encloses a node."""
        node = self.nodes[node_id]
        return {c.texts[0].split(" = ")[0] for c in self.clusters.values()
                if "plate" in c.classes and node.inside(c)}


def parse(svg: str) -> Picture:
    root = ET.fromstring(svg.encode())
    nodes, edges, clusters = {}, {}, {}
    for g in root.iter(NS + "g"):
        classes = set(g.get("class", "").split())
        table = nodes if "node" in classes else edges if "edge" in classes else \
            clusters if "cluster" in classes else None
        if table is not None:
            table[g.get("id")] = _shape(g)
    return Picture(root, nodes, edges, clusters)


def overlaps(texts: list[Text], slack: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of texts whose estimated extents overlap by more than `slack` both ways."""
    out = []
    for a, b in combinations(texts, 2):
        ax0, ay0, ax1, ay1 = a.bbox()
        bx0, by0, bx1, by1 = b.bbox()
        if min(ax1, bx1) - max(ax0, bx0) > slack and min(ay1, by1) - max(ay0, by0) > slack:
            out.append((a.text, b.text))
    return out
