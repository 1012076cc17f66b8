"""The HTML pages around the pictures: the zoo gallery and a proof's steps.

Pages are plain static HTML (no scripts) with the SVGs beside them as files, so they open
from disk in any browser and can be published as they are.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1400px;
       color: #212529; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #dee2e6; }
.entry { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start;
         margin: 1.5em 0 3em; }
.entry figure { margin: 0; } .entry img { max-width: 100%; height: auto; }
.text { flex: 1 1 420px; min-width: 320px; }
pre { background: #f8f9fa; border: 1px solid #dee2e6; padding: 0.8em; overflow-x: auto;
      font-size: 0.85em; line-height: 1.35; }
.summary { font-size: 1.05em; } .muted { color: #868e96; }
nav a { margin-right: 1em; }
figcaption { margin-top: 0.6em; max-width: 60em; }
.approximate { color: #e8590c; } .exact { color: #2b8a3e; }
"""


def document(title: str, body: str) -> str:
    """A complete HTML page."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"{body}\n</body>\n</html>\n")


def image(src: str, alt: str) -> str:
    """An <img> of a relative file name, URL-encoded (a `#` or `?` in a name is not a
    fragment or a query) and then HTML-escaped."""
    return f'<img src="{escape(quote(src))}" alt="{escape(alt)}">'
