"""The language guide stays true: every ```anat block in docs/language.md loads, and the
guide names every builtin box and every parameter initialiser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import anatomy
from anatomy.ops import INITS, OPS

DOC = Path(__file__).resolve().parent.parent / "docs" / "language.md"
FENCE = re.compile(r"^```anat[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def _text() -> str:
    return DOC.read_text()


def _blocks() -> list[tuple[int, str]]:
    text = _text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


def test_doc_has_examples() -> None:
    assert len(_blocks()) >= 15


@pytest.mark.parametrize("line,block", _blocks(), ids=lambda v: f"line{v}" if
                         isinstance(v, int) else "")
def test_anat_block_loads(line: int, block: str) -> None:
    try:
        program = anatomy.load(block)
    except anatomy.AnatError as e:
        pytest.fail(f"docs/language.md block at line {line} does not load:\n{e.render()}")
    assert list(program), f"block at line {line} defines no anatomy"


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_builtin_is_documented(name: str) -> None:
    assert f"`{name}(" in _text(), f"builtin box `{name}` is not documented in {DOC.name}"


@pytest.mark.parametrize("name", sorted(INITS))
def test_every_initialiser_is_documented(name: str) -> None:
    assert re.search(rf"`{name}[`(,]", _text()), \
        f"initialiser `{name}` is not documented in {DOC.name}"
