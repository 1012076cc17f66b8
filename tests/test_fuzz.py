"""Fuzzing the front end: whatever text comes in, `anatomy.load` either returns a checked
program or raises `AnatError`, never any other exception, and it does so quickly.

The default run draws a few hundred examples (CI); `pytest -m fuzz_full tests/test_fuzz.py`
draws more than 10,000 per strategy.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import anatomy
from anatomy import AnatError
from anatomy.ops import INITS, OPS
from anatomy.printer import print_program

ZOO = sorted(Path(anatomy.zoo_dir()).glob("*.anat"))
ZOO_TEXTS = [p.read_text() for p in ZOO]
TOKEN_RE = re.compile(r"[A-Za-z_][A-Za-z_0-9]*|\d+\.?\d*(?:[eE][+-]?\d+)?|\*\*|->|\"[^\"\n]*\"|"
                      r"#[^\n]*|\n|[ \t]+|.")

KEYWORDS = ["anatomy", "dims", "param", "use", "slot", "fills", "true", "false"]
NAMES = ["x", "y", "q", "k", "v", "w", "o", "t", "s", "d", "h", "n", "p", "g", "score",
         "a", "b", "_1", "__import__", "os", "eval"]
NUMBERS = ["0", "1", "2", "7", "64", "512", "0.5", ".5", "1e3", "1e-3", "3.",
           "99999999999999999999999", "1e400", "1" + "0" * 5000, "0000000000000000008"]
PUNCT = ["(", ")", "[", "]", ",", "=", "+", "-", "*", "/", "**", "~", "->", ";", ":"]
LAYOUT = ["\n", "\n", "\n  ", " ", "\\\n", "# comment\n", "\t", "\r\n"]
STRINGS = ['"cores.anat"', '"hydra.anat"', '"missing.anat"', '""', '"."', '"../zoo"']
VOCAB = KEYWORDS + NAMES + NUMBERS + PUNCT + LAYOUT + STRINGS + sorted(OPS) + sorted(INITS)
CHARS = "abcxyz_019 ()[],=+-*/~#;:.\"\\\n\t$@!{}'`"

# The first call builds the LALR tables; keep that out of the per-example deadline.
anatomy.load(ZOO[0])

FAST = settings(max_examples=120, deadline=2000, database=None,
                suppress_health_check=[HealthCheck.too_slow])
FULL = settings(max_examples=10_000, deadline=2000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def load_or_anat_error(text: str) -> None:
    """The property: success or AnatError, with a location that lies inside the text; and
    what loads prints back to text that loads to the same diagrams."""
    try:
        program = anatomy.load(text)
    except AnatError as e:
        assert e.message
        rendered = str(e)
        assert "error:" in rendered
        if e.loc is not None and e.loc.line > 0:
            n_lines = max(len(text.splitlines()), 1)
            # errors are in this text, or in a zoo file it uses
            if e.loc.file == "<string>":
                assert e.loc.line <= n_lines, (e.loc, n_lines)
                assert e.loc.col >= 1
        return
    for d in program:
        assert d.shapes is not None
    if set(program.anatomies) == set(program.own):  # (printing does not write `use` lines)
        printed = print_program(program)
        again = anatomy.load(printed)
        for d in program:
            assert again[d.name].structure() == d.structure(), printed


# -- (a) mutated zoo programs ---------------------------------------------------------


@st.composite
def mutated_zoo(draw) -> str:
    text = draw(st.sampled_from(ZOO_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "insert_token",
                                     "delete_token", "replace_token", "splice_lines"]))
        if not text:
            break
        n = len(text)
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(i, min(n, i + 12)))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        elif kind == "swap":
            k = draw(st.integers(0, n - 1))
            a, b = sorted((i, k))
            if a != b:
                text = text[:a] + text[b] + text[a + 1:b] + text[a] + text[b + 1:]
        elif kind == "replace":
            text = text[:i] + draw(st.sampled_from(CHARS)) + text[i + 1:]
        else:
            tokens = TOKEN_RE.findall(text)
            k = draw(st.integers(0, len(tokens) - 1))
            if kind == "insert_token":
                tokens.insert(k, draw(st.sampled_from(VOCAB)))
            elif kind == "delete_token":  # one to three tokens, e.g. `~ ones`
                del tokens[k:k + draw(st.integers(1, 3))]
            elif kind == "replace_token":
                tokens[k] = draw(st.sampled_from(VOCAB))
            else:  # splice a few lines of another zoo file in place of some of these
                lines = text.split("\n")
                other = draw(st.sampled_from(ZOO_TEXTS)).split("\n")
                a = draw(st.integers(0, len(lines)))
                b = draw(st.integers(0, len(other) - 1))
                m = draw(st.integers(0, 4))
                lines[a:a + draw(st.integers(0, 2))] = other[b:b + m]
                text = "\n".join(lines)
                continue
            text = "".join(tokens)
    return text


@FAST
@given(mutated_zoo())
def test_mutated_zoo_programs(text):
    load_or_anat_error(text)


@pytest.mark.fuzz_full
@FULL
@given(mutated_zoo())
def test_mutated_zoo_programs_full(text):
    load_or_anat_error(text)


# -- (b) token soup -------------------------------------------------------------------

HEADER = "anatomy a(x[t, d]) -> y[t, d]\n  dims d = 8\n"

token_soup = st.lists(st.sampled_from(VOCAB), max_size=60).map(" ".join)
# soup inside a valid header, so that it reaches the type checker more often
statement_soup = st.lists(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=12)
                          .map(" ".join), max_size=6).map(
    lambda stmts: HEADER + "".join(f"  {s}\n" for s in stmts))


@FAST
@given(token_soup)
def test_token_soup(text):
    load_or_anat_error(text)


@FAST
@given(statement_soup)
def test_statement_soup(text):
    load_or_anat_error(text)


@FAST
@given(st.text(alphabet=CHARS, max_size=80))
def test_character_soup(text):
    load_or_anat_error(text)


@pytest.mark.fuzz_full
@FULL
@given(st.one_of(token_soup, statement_soup, st.text(max_size=200)))
def test_soup_full(text):
    load_or_anat_error(text)


# -- (c) deep nesting and long chains -------------------------------------------------

OPERATORS = ["+", "-", "*", "/", "**"]


@st.composite
def deep(draw) -> str:
    depth = draw(st.integers(1, 120))
    kind = draw(st.sampled_from(["paren", "call", "neg", "index", "list", "mixed"]))
    if kind == "paren":
        expr = "(" * depth + "x" + ")" * depth
    elif kind == "call":
        f = draw(st.sampled_from(["relu", "exp", "tanh", "silu", "a", "nope"]))
        expr = f"{f}(" * depth + "x" + ")" * depth
    elif kind == "neg":
        expr = "-" * depth + "x"
    elif kind == "index":
        expr = "x[" * depth + "t, d" + "]" * depth
    elif kind == "list":
        expr = "relu(x, out=" + "[" * depth + "d" + "]" * depth + ")"
    else:
        parts = draw(st.lists(st.sampled_from(["(", "relu(", "-", "x", "2", "+", "*", ")"]),
                              min_size=depth, max_size=depth))
        expr = "".join(parts)
    return HEADER + f"  y[t, d] = {expr}\n"


@st.composite
def long_chain(draw) -> str:
    n = draw(st.integers(1, 3000))
    ops = draw(st.lists(st.sampled_from(OPERATORS), min_size=1, max_size=5))
    terms = draw(st.sampled_from(["x", "2", "x[t, d]", "relu(x)", "(x + 1)"]))
    expr = terms + "".join(f" {ops[i % len(ops)]} {terms}" for i in range(n))
    return HEADER + f"  y[t, d] = {expr}\n"


@FAST
@given(deep())
def test_deep_nesting(text):
    load_or_anat_error(text)


@FAST
@given(long_chain())
def test_long_operator_chains(text):
    load_or_anat_error(text)


@pytest.mark.fuzz_full
@FULL
@given(st.one_of(deep(), long_chain()))
def test_nesting_and_chains_full(text):
    load_or_anat_error(text)


@pytest.mark.parametrize("n", [2, 10, 150])
def test_long_product_chain_is_one_contraction(n):
    """A product is flattened into one contract box, not a tower of nested boxes."""
    text = HEADER + "  y[t, d] = " + " * ".join(["x"] * n) + "\n"
    d = anatomy.load(text)["a"]
    (box,) = d.boxes
    assert box.op == "contract" and len(box.inputs) == n


def test_deep_nesting_is_an_error_not_a_crash():
    text = HEADER + "  y[t, d] = " + "(" * 500 + "x" + ")" * 500 + "\n"
    with pytest.raises(AnatError, match="nested more than"):
        anatomy.load(text)


@pytest.mark.parametrize("op", ["+", "*", "-", "/"])
def test_chains_past_the_depth_limit_are_an_error(op):
    text = HEADER + "  y[t, d] = " + f" {op} ".join(["x"] * 1000) + "\n"
    with pytest.raises(AnatError, match="nested more than") as info:
        anatomy.load(text)
    assert (info.value.loc.line, info.value.loc.col) == (3, 3)


# -- the text is data, never code -----------------------------------------------------


@pytest.mark.parametrize("payload", [
    "__import__('os').system('touch PWNED')",
    '__import__("os").system("touch PWNED")',
    "eval(\"1\")",
    "exec(open('x').read())",
    "{{7*7}}",
    "os.system('true')",
])
def test_source_is_never_evaluated(payload, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = HEADER + f"  y[t, d] = {payload}\n"
    with pytest.raises(AnatError):
        anatomy.load(text)
    assert not (tmp_path / "PWNED").exists()


def test_python_names_are_just_unknown_boxes():
    with pytest.raises(AnatError, match="unknown box `__import__`"):
        anatomy.load(HEADER + "  y[t, d] = __import__(x)\n")
    with pytest.raises(AnatError, match="unknown box `eval`"):
        anatomy.load(HEADER + "  y[t, d] = eval(x)\n")
