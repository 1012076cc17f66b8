"""The zoo's catalogue: one entry per zoo file, with the paper it follows and what
distinguishes it, read from the file's header comment (`program.file_header`: its first line
names the paper, the rest says what the file reproduces) and the comment above each anatomy
(`Diagram.doc`). `anatomy zoo` prints it; `anatomy zoo --markdown` writes docs/zoo.md, which
tests/test_docs.py keeps equal to the generated text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .program import file_header, load, zoo_dir


@dataclass(frozen=True)
class ZooEntry:
    """One zoo file: its paper, what it reproduces, and its anatomies with their own docs
    (empty where the anatomy's doc is the file's header)."""

    file: str
    paper: str
    about: str
    anatomies: tuple[tuple[str, str], ...]


def zoo_entries(directory: Path | None = None) -> list[ZooEntry]:
    """The catalogue of every .anat file in the zoo (or `directory`), by file name."""
    entries = []
    for path in sorted((directory or zoo_dir()).glob("*.anat")):
        header = file_header(path.read_text())
        paper, _, about = header.partition("\n")
        program = load(path)
        docs = tuple((name, _one_line(program[name].doc) if program[name].doc != header
                      else "") for name in program.own)
        entries.append(ZooEntry(path.name, paper.strip(), _one_line(about), docs))
    return entries


def zoo_text(entries: list[ZooEntry] | None = None) -> str:
    """One line per zoo file: `file: paper [anatomies]`."""
    lines = []
    for e in entries if entries is not None else zoo_entries():
        names = ", ".join(name for name, _ in e.anatomies)
        lines.append(f"{e.file}: {e.paper}  [{names}]")
    return "\n".join(lines) + "\n"


def zoo_markdown(entries: list[ZooEntry] | None = None) -> str:
    """docs/zoo.md: one line per zoo file, its anatomies below it where they have docs."""
    out = [
        "# The zoo",
        "",
        "One line per file of `zoo/`: the paper it follows and what distinguishes it, then its",
        "anatomies. Generated from the files' header comments and the comments above each",
        "anatomy by `anatomy zoo --markdown > docs/zoo.md`; do not edit by hand",
        "(tests/test_docs.py checks that this page is current).",
        "",
    ]
    for e in entries if entries is not None else zoo_entries():
        about = f" {e.about}" if e.about else ""
        line = f"- **[{e.file}](../zoo/{e.file})**: {e.paper}.{about}"
        if all(not doc for _, doc in e.anatomies):
            names = ", ".join(f"`{name}`" for name, _ in e.anatomies)
            out.append(f"{line} Anatomies: {names}.")
            continue
        out.append(line)
        out.extend(f"  - `{name}`" + (f": {doc}" if doc else "") for name, doc in e.anatomies)
    return "\n".join(out) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())
