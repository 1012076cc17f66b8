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
    "_ARROW": "->", "_POW": "**", "$END": "end of file", "COLON": ":",
}


class _BracketNewlines(PostLex):
    """Drop newlines inside brackets so long expressions may span lines."""

    always_accept = ("_NL",)

    def __init__(self, file: str, lines: list[str]):
        self.file, self.lines = file, lines
        self.open: list[Token] = []  # brackets not closed yet, for error hints

    def process(self, stream):
        self.open = []
        for tok in stream:
            if tok.type in ("LPAR", "LSQB"):
                self.open.append(tok)
                if len(self.open) > MAX_NESTING:
                    raise AnatError(f"brackets nested more than {MAX_NESTING} deep",
                                    _loc_of(self.file, self.lines, tok.line, tok.column),
                                    hint="split the expression into several statements")
            elif tok.type in ("RPAR", "RSQB"):
                if self.open:
                    self.open.pop()
            elif tok.type == "_NL" and self.open:
                continue
            yield tok


def source_lines(text: str) -> list[str]:
    """The lines of a source text as the lexer counts them: split at newlines only, not at
    the other separators str.splitlines knows (form feed, U+2028, ...), which lark ignores."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


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
    lines = source_lines(text)
    parser, postlex = _parser()
    postlex.file, postlex.lines, postlex.open = file, lines, []
    try:
        return parser.parse(text + "\n")
    except AnatError:
        raise
    except UnexpectedInput as e:
        raise _syntax_error(e, file, lines, list(postlex.open)) from None
    except LarkError as e:  # pragma: no cover - other lark failures are still user input
        raise AnatError(f"cannot parse: {e}", SourceLoc(file, 0, 0)) from None


def _syntax_error(e: UnexpectedInput, file: str, lines: list[str],
                  open_brackets: list[Token] = ()) -> AnatError:
    line = getattr(e, "line", 0) or 0
    col = getattr(e, "column", 0) or 0
    at_end = isinstance(e, UnexpectedEOF) or (
        isinstance(e, UnexpectedToken) and e.token.type == "$END")
    end = getattr(e, "token", None)
    if at_end and end is not None and end.end_line:
        # lark places the end of input on the last token: point just after it
        line, col = end.end_line, end.end_column
    elif at_end or line <= 0 or line > len(lines):
        line = next((i + 1 for i in range(len(lines) - 1, -1, -1) if lines[i].strip()), 1)
        col = len(lines[line - 1]) + 1 if lines else 1
    loc = _loc_of(file, lines, line, col)
    if isinstance(e, UnexpectedCharacters):
        ch = lines[line - 1][col - 1] if 0 < col <= len(lines[line - 1]) else "?"
        return AnatError(f"unexpected character {ch!r}", loc,
                         hint="names are letters, digits and _; comments start with #")
    expected = sorted({_TOKEN_NAMES.get(t, t.lower().strip("_")) for t in e.expected}) \
        if getattr(e, "expected", None) else []
    if at_end:
        got = "end of file"
    else:
        tok: Token = e.token
        got = "end of line" if tok.type == "_NL" else repr(str(tok))
    hint = "expected " + ", ".join(expected[:10]) if expected else None
    related = []
    if not at_end and isinstance(e, UnexpectedToken):  # the offending token itself
        open_brackets = [b for b in open_brackets if b is not e.token
                         and (b.line, b.column) != (e.token.line, e.token.column)]
    if open_brackets:
        # newlines inside brackets are skipped, so an unclosed bracket shows up later
        b = open_brackets[-1]
        related = [(_loc_of(file, lines, b.line, b.column), f"this `{b}` is not closed")]
        hint = f"a `{b}` is not closed" + ("; " + hint if hint else "")
    return AnatError(f"unexpected {got}", loc, hint=hint, related=related)


def position(node: Tree | Token, file: str, lines: list[str]) -> SourceLoc:
    """The source location of a tree node or token."""
    if isinstance(node, Token):
        return _loc_of(file, lines, node.line or 0, node.column or 0)
    meta = node.meta
    if getattr(meta, "empty", True):
        return SourceLoc(file, 0, 0)
    return _loc_of(file, lines, meta.line, meta.column)
