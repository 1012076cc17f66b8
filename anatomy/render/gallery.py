"""The gallery: every anatomy of a directory of .anat files, each with its picture, its
one-line summary and its source, on one static HTML page (`anatomy render zoo/ -o site/`)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from urllib.parse import quote

from ..errors import AnatError
from ..ir import Diagram
from ..program import file_header, load
from . import page
from .output import write_text
from .picture import to_svg


def summary(diagram: Diagram, header: str) -> str:
    """One line saying what an anatomy is: its doc comment's first line, or the file's."""
    for text in (diagram.doc, header):
        if text.strip():
            return text.strip().splitlines()[0]
    return ""


def source_of(diagram: Diagram, lines: list[str]) -> str:
    """The anatomy's own lines of its file: its header and indented body."""
    start = end = diagram.loc.line
    while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
        end += 1
    return "\n".join(lines[start - 1:end]).rstrip() + "\n"


def render_gallery(directory: Path, out_dir: Path, depth: int = 1) -> Path:
    """Write `out_dir/index.html` and one SVG per anatomy of the .anat files in `directory`;
    returns the index's path."""
    files = sorted(Path(directory).glob("*.anat"))
    if not files:
        raise AnatError(f"no .anat files in {directory}")
    sections, toc = [], []
    for path in files:
        text = path.read_text(encoding="utf-8-sig")
        header, lines = file_header(text), text.splitlines()
        entries = []
        for d in load(path):
            svg = f"{path.stem}.{d.name}.svg"
            write_text(out_dir / svg, to_svg(d, depth))
            entries.append(
                f'<div class="entry" id="{escape(path.stem)}.{escape(d.name)}">'
                f"<figure>{page.image(svg, d.name)}</figure>"
                f'<div class="text"><h3>{escape(d.name)}</h3>'
                f'<p class="summary">{escape(summary(d, header))}</p>'
                f"<pre>{escape(source_of(d, lines))}</pre></div></div>")
        toc.append(f'<a href="#{escape(quote(path.stem))}">{escape(path.name)}</a>')
        sections.append(f'<h2 id="{escape(path.stem)}">{escape(path.name)}</h2>'
                        f'<p class="muted">{escape(header)}</p>' + "".join(entries))
    body = (f"<h1>anatomy gallery: {escape(Path(directory).name or str(directory))}</h1>"
            f"<nav>{' '.join(toc)}</nav>" + "".join(sections))
    index = out_dir / "index.html"
    write_text(index, page.document("anatomy gallery", body))
    return index
