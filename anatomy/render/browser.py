"""Looking at pages as a person would: headless Chromium screenshots, and how much of a
screenshot is drawn on (a blank page is all white).

Used by the tests (the gallery must not render blank) and by scripts/screenshots.py (the
PNGs in docs/img). Chromium is optional: `chromium()` is None where it is not installed.
"""

from __future__ import annotations

import math
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    """The path of a Chromium-family browser, or None."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def svg_size_px(svg: str) -> tuple[int, int]:
    """The size a browser shows an SVG at (graphviz writes points; 1 pt = 4/3 px)."""
    width, height = (float(re.search(rf'{k}="([\d.]+)pt"', svg).group(1))
                     for k in ("width", "height"))
    return math.ceil(width * 4 / 3), math.ceil(height * 4 / 3)


def screenshot(page: Path, png: Path, width: int, height: int, scale: float = 1.0) -> None:
    """Open `page` (a file) in headless Chromium at `width` x `height` CSS pixels and save
    what it shows to `png`."""
    browser = chromium()
    if browser is None:
        raise RuntimeError("no Chromium-family browser on PATH (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--force-device-scale-factor={scale}",
             f"--window-size={width},{height}", f"--screenshot={png.resolve()}",
             page.resolve().as_uri()],
            check=True, capture_output=True, timeout=120)


def ink(png: Path) -> float:
    """The fraction of pixels of an 8-bit RGB/RGBA PNG that are not (near) white."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    pos, chunks = 8, {}
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.setdefault(kind, []).append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
    width, height, bits, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    assert bits == 8 and colour in (2, 6) and not interlace, "only 8-bit RGB(A) PNGs"
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
    stride = width * channels
    previous = bytearray(stride)
    inked = 0
    for y in range(height):
        start = y * (stride + 1)
        row = _unfilter(raw[start], bytearray(raw[start + 1:start + 1 + stride]), previous,
                        channels)
        inked += sum(1 for x in range(0, stride, channels) if min(row[x:x + 3]) < 240)
        previous = row
    return inked / (width * height)


def _unfilter(kind: int, row: bytearray, prev: bytearray, bpp: int) -> bytearray:
    """Undo one PNG scanline filter (None, Sub, Up, Average, Paeth)."""
    for i in range(len(row)):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            row[i] = (row[i] + a) & 255
        elif kind == 2:
            row[i] = (row[i] + b) & 255
        elif kind == 3:
            row[i] = (row[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return row
