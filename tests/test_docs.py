"""The docs stay true: every ```anat block in docs/language.md loads, the guide names every
builtin box and every parameter initialiser, and docs/zoo.md is what the zoo's headers
generate."""

from __future__ import annotations

import re
import subprocess
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


ROOT = DOC.parent.parent


def _sources() -> list[Path]:
    """The project's text files: those git tracks when this is a clone (so work in progress
    does not count), else every file under the package and doc folders."""
    suffixes = (".py", ".md", ".anat", ".sh", ".cpp", ".lark")
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split()
        files = [ROOT / f for f in tracked]
    except (OSError, subprocess.CalledProcessError):
        files = [p for folder in ("anatomy", "grammar", "lowering", "kernels", "zoo", "tests",
                                  "bench", "scripts", "docs") for p in (ROOT / folder).rglob("*")]
        files.append(ROOT / "README.md")
    return sorted(p for p in files if p.suffix in suffixes and p.is_file())


SOURCES = _sources()
REPO_PATH = re.compile(r"(?<![\w/.-])((?:docs|bench|tests|scripts|zoo|kernels|lowering|grammar|"
                       r"anatomy)/[\w./-]*\.(?:md|py|anat|sh|cpp|lark|json))\b")
SECTION = re.compile(r"background\.md\s*§(\d+)(?:\s*[–-]\s*§(\d+))?")


def test_every_repository_path_named_in_code_and_docs_exists():
    """A path like docs/kernels.md or bench/prover.py named in a docstring, comment or doc
    must exist (results files a bench writes on its first run are exempt)."""
    missing = set()
    for source in SOURCES:
        for m in REPO_PATH.finditer(source.read_text(errors="replace")):
            path = m.group(1).rstrip(".")
            if path.startswith("bench/results/") or "*" in path or "<" in path:
                continue
            if not (ROOT / path).exists():
                missing.add(f"{source.relative_to(ROOT)}: {path}")
    assert not missing, "named but absent:\n" + "\n".join(sorted(missing))


def test_every_background_section_cited_exists():
    sections = {int(n) for n in re.findall(r"^## (\d+)\.", (DOC.parent / "background.md")
                                           .read_text(), re.MULTILINE)}
    assert sections == set(range(1, max(sections) + 1))
    cited = {(str(source.relative_to(ROOT)), int(n)) for source in SOURCES
             for m in SECTION.finditer(source.read_text(errors="replace"))
             for n in m.groups() if n}
    assert cited, "nothing cites docs/background.md by section"
    assert not {c for c in cited if c[1] not in sections}, cited


def test_markdown_links_resolve():
    broken = []
    for doc in [*sorted(DOC.parent.glob("*.md")), ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.name}: {target}")
    assert not broken, broken
