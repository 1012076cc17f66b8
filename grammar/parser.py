"""Text to parse tree: the lark LALR parser for anat.lark, with errors turned into AnatError.

LALR parsing is linear in the input; the nesting guard below bounds recursion later on.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)
from lark.lark import PostLex

from anatomy.errors import AnatError, SourceLoc

MAX_NESTING = 48  # brackets deeper than this are certainly a mistake

_TOKEN_NAMES = {
    "LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]", "COMMA": ",", "EQUAL": "=",
    "PLUS": "+", "MINUS": "-", "STAR": "*", "SLASH": "/", "TILDE": "~", "SEMICOLON": ";",
    "_NL": "end of line", "NAME": "a name", "NUMBER": "a number", "STRING": "a quoted path",
    "__ANON_0": "->", "__ANON_1": "**", "$END": "end of file", "COLON": ":",
}


class _BracketNewlines(PostLex):
    """Drop newlines inside brackets so long expressions may span lines."""

    always_accept = ("_NL",)

    def __init__(self, file: str, lines: list[str]):
        self.file, self.lines = file, lines

    def process(self, stream):
        depth = 0
        for tok in stream:
            if tok.type in ("LPAR", "LSQB"):
                depth += 1
                if depth > MAX_NESTING:
                    raise AnatError(f"brackets nested more than {MAX_NESTING} deep",
                                    _loc_of(self.file, self.lines, tok.line, tok.column),
                                    hint="split the expression into several statements")
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(depth - 1, 0)
            elif tok.type == "_NL" and depth:
                continue
            yield tok


def _loc_of(file: str, lines: list[str], line: int, col: int) -> SourceLoc:
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return SourceLoc(file, line, col, text)


@lru_cache(maxsize=1)
def _parser() -> tuple[Lark, _BracketNewlines]:
    postlex = _BracketNewlines("<string>", [])
    grammar = (Path(__file__).with_name("anat.lark")).read_text()
    lark = Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True,
                postlex=postlex)
    return lark, postlex


def parse(text: str, file: str = "<string>") -> Tree:
    """Parse .anat source text into a lark tree, or raise AnatError at the first error."""
    lines = text.splitlines()
    parser, postlex = _parser()
    postlex.file, postlex.lines = file, lines
    try:
        return parser.parse(text + "\n")
    except AnatError:
        raise
    except UnexpectedInput as e:
        raise _syntax_error(e, file, lines) from None
    except LarkError as e:  # pragma: no cover - other lark failures are still user input
        raise AnatError(f"cannot parse: {e}", SourceLoc(file, 0, 0)) from None


def _syntax_error(e: UnexpectedInput, file: str, lines: list[str]) -> AnatError:
    line = getattr(e, "line", 0) or 0
    col = getattr(e, "column", 0) or 0
    if line <= 0 or line > len(lines):
        line = max(len(lines), 1)
        col = len(lines[-1]) + 1 if lines else 1
    loc = _loc_of(file, lines, line, col)
    if isinstance(e, UnexpectedCharacters):
        ch = lines[line - 1][col - 1] if 0 < col <= len(lines[line - 1]) else "?"
        return AnatError(f"unexpected character {ch!r}", loc,
                         hint="names are letters, digits and _; comments start with #")
    expected = sorted({_TOKEN_NAMES.get(t, t.lower().strip("_")) for t in e.expected}) \
        if getattr(e, "expected", None) else []
    if isinstance(e, UnexpectedEOF):
        got = "end of file"
    else:
        tok: Token = e.token
        got = "end of line" if tok.type == "_NL" else repr(str(tok))
    hint = "expected " + ", ".join(expected[:10]) if expected else None
    if isinstance(e, UnexpectedToken) and e.token.type == "_NL" and "]" in expected:
        hint = "a `[` is not closed on this line: " + (hint or "")
    return AnatError(f"unexpected {got}", loc, hint=hint)


def position(node: Tree | Token, file: str, lines: list[str]) -> SourceLoc:
    """The source location of a tree node or token."""
    if isinstance(node, Token):
        return _loc_of(file, lines, node.line or 0, node.column or 0)
    meta = node.meta
    if getattr(meta, "empty", True):
        return SourceLoc(file, 0, 0)
    return _loc_of(file, lines, meta.line, meta.column)
