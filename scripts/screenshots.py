"""Regenerate the README's pictures: three zoo entries rendered to SVG and photographed in
headless Chromium (what a reader's browser shows), saved as docs/img/NAME.png.

Run: .venv/bin/python scripts/screenshots.py [--scale 1.0] [--out docs/img]
Needs graphviz and Chromium (apt-get install graphviz chromium).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import anatomy
from anatomy.render import to_svg
from anatomy.render.browser import screenshot, svg_size_px

ENTRIES = [("ssd.anat", "ssd"), ("hydra.anat", "hydra"), ("gqa.anat", "gqa")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0, help="device pixels per CSS pixel")
    ap.add_argument("--out", default="docs/img")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for file, name in ENTRIES:
            svg = to_svg(anatomy.load(anatomy.zoo_dir() / file)[name])
            page = Path(tmp) / f"{name}.svg"
            page.write_text(svg)
            width, height = svg_size_px(svg)
            screenshot(page, out / f"{name}.png", width, height, args.scale)
            print(f"{out / f'{name}.png'}: {width} x {height} CSS px")


if __name__ == "__main__":
    main()
