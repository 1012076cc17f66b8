"""Errors a user can cause, with a source location, the offending line, a caret and a hint.

Every malformed or ill-typed program raises `AnatError`; anything else escaping is a bug.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SourceLoc:
    """A position in a source text (1-based line and column) and the text of that line."""

    file: str
    line: int
    col: int
    text: str = field(default="", compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


UNKNOWN = SourceLoc("<unknown>", 0, 0)


class AnatError(Exception):
    """A user-facing error: what went wrong, where, and what to do about it."""

    def __init__(self, message: str, loc: SourceLoc | None = None, hint: str | None = None,
                 related: list[tuple[SourceLoc, str]] | None = None):
        self.message = message
        self.loc = loc
        self.hint = hint
        self.related = related or []
        super().__init__(self.render())

    def render(self) -> str:
        out = []
        if self.loc is not None and self.loc.line > 0:
            out.append(f"{self.loc}: error: {self.message}")
            out.extend(_excerpt(self.loc))
        elif self.loc is not None:
            out.append(f"{self.loc.file}: error: {self.message}")
        else:
            out.append(f"error: {self.message}")
        for loc, note in self.related:
            out.append(f"{loc}: note: {note}")
            out.extend(_excerpt(loc))
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)


def _excerpt(loc: SourceLoc) -> list[str]:
    if not loc.text:
        return []
    line = loc.text.rstrip("\n").replace("\t", " ")
    gutter = f"{loc.line:>4} | "
    caret = " " * (len(gutter) + max(loc.col - 1, 0)) + "^"
    return [gutter + line, caret]


def closest(name: str, known) -> str | None:
    """The known name closest to `name`, for 'did you mean' hints."""
    matches = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, known, what: str = "name") -> str:
    guess = closest(name, known)
    if guess:
        return f"did you mean `{guess}`?"
    shown = ", ".join(sorted(known)[:12])
    whats = what[:-1] + "ies" if what.endswith("y") else what + "s"
    return f"known {whats}: {shown}" if shown else f"no {whats} are defined here"
