"""The docs stay true: every ```anat block in docs/language.md loads, the guide names every
builtin box and every parameter initialiser, and docs/zoo.md is what the zoo's headers
generate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import anatomy
from anatomy.catalog import zoo_entries, zoo_markdown
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


ZOO_DOC = DOC.parent / "zoo.md"


def test_zoo_page_is_generated_from_the_zoo():
    assert ZOO_DOC.read_text() == zoo_markdown(), \
        "docs/zoo.md is stale: run `anatomy zoo --markdown > docs/zoo.md`"


def test_zoo_page_has_one_line_per_file_with_its_paper():
    files = sorted(p.name for p in anatomy.zoo_dir().glob("*.anat"))
    entries = zoo_entries()
    assert [e.file for e in entries] == files
    lines = [line for line in ZOO_DOC.read_text().splitlines() if line.startswith("- **[")]
    assert len(lines) == len(files)
    for e, line in zip(entries, lines):
        assert line.startswith(f"- **[{e.file}](../zoo/{e.file})**: {e.paper}")
        program = anatomy.load(anatomy.zoo_dir() / e.file)
        assert [name for name, _ in e.anatomies] == list(program.own)
    mla = next(e for e in entries if e.file == "mla.anat")
    assert mla.paper.startswith("Multi-head latent attention, MLA (DeepSeek-AI, \"DeepSeek-V2")
    assert dict(mla.anatomies)["mla_absorbed"].startswith("The absorbed form")


def test_a_changed_header_changes_the_page(tmp_path):
    (tmp_path / "a.anat").write_text("# A paper (Someone, \"Title\", 2030)\n# What it does.\n\n"
                                     "# The doc of b\nanatomy b(x[t, d]) -> y[t, d]\n"
                                     "  y[t, d] = x\n")
    (entry,) = zoo_entries(tmp_path)
    assert entry.paper == 'A paper (Someone, "Title", 2030)' and entry.about == "What it does."
    assert entry.anatomies == (("b", "The doc of b"),)
    assert '- **[a.anat](../zoo/a.anat)**: A paper (Someone, "Title", 2030). What it does.' \
        in zoo_markdown([entry])
