"""Printing is the inverse of parsing: print -> parse gives the same diagram (`structure()`),
and printing the result again gives the same text (a fixpoint)."""

from __future__ import annotations

from pathlib import Path

import pytest

import anatomy
from anatomy.printer import print_diagram, print_program

ZOO_FILES = sorted(Path(anatomy.zoo_dir()).glob("*.anat"))
ZOO_ANATOMIES = [(p, d.name) for p in ZOO_FILES for d in anatomy.load(p)]


def roundtrip(program: anatomy.Program) -> str:
    """Print the program, parse the text, compare every anatomy; returns the text."""
    text = print_program(program)
    again = anatomy.load(text)
    assert [d.name for d in again] == [d.name for d in program]
    for d in program:
        assert again[d.name].structure() == d.structure(), (d.name, text)
    assert print_program(again) == text  # fixpoint
    return text


def test_the_zoo_has_anatomies():
    assert len(ZOO_FILES) >= 13 and len(ZOO_ANATOMIES) >= len(ZOO_FILES)


@pytest.mark.parametrize("path", ZOO_FILES, ids=lambda p: p.stem)
def test_zoo_file_round_trips(path):
    roundtrip(anatomy.load(path))


@pytest.mark.parametrize("path, name", ZOO_ANATOMIES,
                         ids=[f"{p.stem}:{n}" for p, n in ZOO_ANATOMIES])
def test_zoo_anatomy_round_trips(path, name):
    program = anatomy.load(path)
    d = program[name]
    calls = [b for b in d.boxes if b.op in ("call", "slot")]
    if calls:  # a composite needs its callees next to it: print the whole file
        text = print_program(program)
    else:
        text = print_diagram(d)
    again = anatomy.load(text)[name]
    assert again.structure() == d.structure()
    assert (print_program(anatomy.load(text)) if calls else print_diagram(again)) == text
    # the docstring comment survives printing too
    assert again.doc == d.doc


@pytest.mark.parametrize("path", ZOO_FILES, ids=lambda p: p.stem)
def test_zoo_round_trips_at_other_dims(path):
    """Shapes at the printed text's dims are the shapes of the original."""
    program = anatomy.load(path)
    again = anatomy.load(print_program(program))
    for d in program:
        e = again[d.name]
        assert {w: d.shapes.shape(w) for w in d.wires} == \
            {w: e.shapes.shape(w) for w in e.wires}
        assert d.shapes.param_count() == e.shapes.param_count()


HEAD = "anatomy a(x[t, d]) -> y[t, d]\n  dims d = 8\n"

EDGE_CASES = {
    "precedence": HEAD + """\
  p[t, d] = (x + 1) * (x - 1)
  q[t, d] = x - (x - 1)
  r[t, d] = x / (x / 2)
  u[t, d] = x ** 2 ** 3
  v[t, d] = (x ** 2) ** 3
  w[t, d] = -x ** 2
  z[t, d] = (-x) ** 2 + 2 ** -x
  y[t, d] = p + q + r + (u - (v + w)) - z
""",
    "nested builtins and products": HEAD + """\
  param g[d] ~ ones
  z[t, d] = relu(x * g) + exp(-x) * sigmoid(x)
  y[t, d] = tanh(silu(gelu(elu(softplus(z))))) / sqrt(abs(z) + 1)
""",
    "transposes, renames and sums": HEAD + """\
  xt[d, t] = x
  c[t, d] = xt[d, t]
  tot[t] = x
  gram[t, s] = x * x[s, d]
  y[t, d] = gram / tot * c[s, d]
""",
    "scaled contraction": HEAD + """\
  score[t, s] = x * x[s, d] / sqrt(d)
  w[t, s] = softmax(score, s, mask=causal(t, s))
  y[t, d] = w * x[s, d]
""",
    "constants and sizes": HEAD + """\
  y[t, d] = x * 0.5 + 1e-3 + 99999999999999999999 + log(t) - index(t) / d
""",
    "linear options": "anatomy a(x[t, d]) -> y[t, d]\n  dims d = 8, h = 2, p = d / h\n" + """\
  q[t, h, p] = linear(x)
  k[t, h, p] = linear(x, bias=true)
  v[t, p] = linear(x, out=[p], name=wv, init=zeros)
  g[t, d] = linear(x, in=[d])
  r[t, h, p] = rope(linear(x), t, p)
  o[t, h, p] = q * k + v + r
  y[t, d] = linear(o) + g
""",
    "norms": HEAD + """\
  dims g = 2, c = d / g
  a[t, d] = layernorm(x, d)
  b[t, d] = rmsnorm(x, d, eps=0.001)
  e[t, d] = layernorm(x, d, affine=false)
  xs[t, g, c] = linear(x)
  n[t, g, c] = groupnorm(xs, c, g)
  y[t, d] = a + b + e + linear(n)
""",
    "masks, decays and structure": HEAD + """\
  param lg[d] ~ uniform(-1, 0)
  w1[t, s] = window(t, s, size=4) * full(t, s)
  dc[d, t, s] = decay(lg, t, s)
  dv[t, s, d] = decay(x, t, s)
  sh[t, d] = shift(x, t, by=-1) + flip(x, t) + shift(x, t)
  y[t, d] = w1 * dc * dv * sh[s, d]
""",
    "split, concat, share": "anatomy a(x[t, d]) -> y[t, h, d]\n  dims d = 8, c = 4, g = 2, h = 4\n"
    + """\
  lo[t, c], hi[t, r] = split(x)
  back[t, d] = concat(hi, lo)
  kv[t, g, d] = linear(back)
  y[t, h, d] = share(kv, g, h)
""",
    "reshape and composite outputs named by the target": """\
anatomy proj(x[t, i]) -> y[t, o]
  dims i = 4, o = 6
  y[t, o] = linear(x)

anatomy heads(x[t, d]) -> y[t, d]
  dims d = 8, h = 2, p = d / h
  f[t, d] = proj(x)
  q[t, h, p] = reshape(f)
  g[t, d] = reshape(relu(q))
  y[t, d] = proj(g) + reshape(q)
""",
    "position encodings": HEAD + """\
  q[t, d] = xpos(x, t, d, downscale=true, base=500.0)
  y[t, d] = rope(q, t, d, base=10.0)
""",
    "params and initialisers": HEAD + """\
  param w0[d]
  param w1[d] ~ normal(-1, 2)
  param w2[d, e] ~ fan_in(e)
  param w3[d] ~ constant(3)
  param w4[d] ~ log_uniform(1, 16)
  param w5[d] ~ inv_softplus_log_uniform(0.001, 0.1)
  m[t, d] = x * w2[d, e] / e
  y[t, d] = x * w0 * w1 * w3 * w4 * w5 + m
""",
    "composites and slots": """\
slot mixer(q[t, n]) -> o[t, n]

# fills the slot
anatomy ident(q[t, n]) -> o[t, n] fills mixer
  o[t, n] = q

anatomy two(x[t, d]) -> a[t, d], b[t, d]
  dims d
  a[t, d] = x
  b[t, d] = -x

anatomy outer(x[t, d]) -> y[t, d]
  dims d = 16
  p[t, d], m[t, d] = two(relu(x), d=16)
  y[t, d] = slot mixer(p) + ident(m)
""",
    "long division chain": HEAD + "  y[t, d] = " + " / ".join(["x"] * 60) + "\n",
    "long mixed chain": HEAD + "  y[t, d] = x" + " * x / x ** 2" * 60 + " * x\n",
    "long sum of products": HEAD + "  y[t, d] = x" + " + x * x * x" * 99 + "\n",
    "division inside products": HEAD + "  y[t, d] = relu(x / 2 * x * (x / 3) / (x * x))\n",
    "dim expressions": "anatomy a(x[t, d]) -> y[t, d]\n"
    "  dims d = 24, h = 2, e, p = (d - h) / (h * 11), q = d / h / 3, r = d - (h - 1)\n"
    "  y[t, d] = x\n",
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_hand_written_programs_round_trip(name):
    roundtrip(anatomy.load(EDGE_CASES[name]))


def test_inlined_text_reads_like_the_source():
    """Anonymous sub-expression wires are inlined back: no `_1` names in the text."""
    for name, text in EDGE_CASES.items():
        printed = print_program(anatomy.load(text))
        assert "_1" not in printed.replace("w_", "").replace("_log", ""), name


def test_implicit_params_are_not_printed():
    text = print_program(anatomy.load(EDGE_CASES["linear options"]))
    assert "param" not in text
    assert "linear(x, bias=true)" in text
    # out=[p] is what the target [t, p] implies, so it is not repeated
    assert "v[t, p] = linear(x, name=wv, init=zeros)" in text
    assert "g[t, d] = linear(x, in=[d])" in text


def test_precedence_survives():
    printed = print_program(anatomy.load(EDGE_CASES["precedence"]))
    assert "x - (x - 1)" in printed
    assert "x / (x / 2)" in printed
    assert "(x + 1) * (x - 1)" in printed


def test_structure_is_sensitive_to_changes():
    """structure() is a real comparison: different programs differ."""
    base = anatomy.load(HEAD + "  y[t, d] = x + 1\n")["a"].structure()
    assert base == anatomy.load(HEAD + "  y[t, d] = x + 1\n")["a"].structure()
    for other in ["  y[t, d] = x + 2\n", "  y[t, d] = x - 1\n", "  y[t, d] = 1 + x\n",
                  "  y[t, d] = relu(x) + 1\n"]:
        assert anatomy.load(HEAD + other)["a"].structure() != base, other
    assert anatomy.load(HEAD.replace("8", "9") + "  y[t, d] = x + 1\n")["a"].structure() != base


def test_dims_without_default_round_trip():
    d = anatomy.load("anatomy a(x[t, d]) -> y[t, d]\n  dims d, h = 2\n  y[t, d] = x\n")["a"]
    assert d.dims["d"].expr is None and str(d.dims["h"].expr) == "2"
    assert "  dims d, h = 2\n" in d.to_text()


def test_longest_accepted_chain_round_trips():
    """At the expression depth limit, the printed text (which indexes every factor) must
    still be accepted."""
    last = None
    for n in range(150, 300):
        try:
            last = anatomy.load(HEAD + "  y[t, d] = x" + " + x * x" * n + "\n")
        except anatomy.AnatError as e:
            assert "nested more than" in e.message
            break
    assert last is not None and 150 < n < 299
    roundtrip(last)
