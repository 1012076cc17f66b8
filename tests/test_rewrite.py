"""The rewrite engine: every rule certified, wrong rules rejected, the required proofs found
and replayed, the false claims refused with counterexamples, approximate steps only on
request.

The certifier compares two independent evaluations of each rule's two sides: the symbolic
interpreter (anatomy/verify/symbolic.py, written from the papers' equations) and the
compiled torch modules. Tolerances: sympy differences simplify to exactly 0; numeric
relative RMSE <= 1e-9 in float64.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sympy
import torch

import anatomy
from anatomy import AnatError
from anatomy.rewrite import RULES, Proof, Refusal, Side
from anatomy.rewrite.edit import Edit
from anatomy.rewrite.rules import algebra, sequence
from anatomy.rewrite.site import APPROXIMATE, EXACT, Rule, Site
from anatomy.verify import prove, verify_proof
from anatomy.verify.certify import certify
from anatomy.verify.symbolic import Interpreter
from tests.references import REFERENCES, load_zoo, random_inputs

ZOO = Path(__file__).resolve().parent.parent / "zoo"


def side(target: str, **dims) -> Side:
    file, name = target.split(":")
    path = str(ZOO / file)
    d = anatomy.load(path, strict_dims=False, **dims)[name]
    return Side(d, path, name, {k: v for k, v in dims.items() if k in d.dims})


# -- certificates ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_is_certified(name):
    cert = certify(RULES[name])
    assert cert.ok, cert.render()
    assert cert.sites >= 1 and cert.symbolic
    if RULES[name].kind == EXACT:
        assert all(cert.symbolic) and cert.worst_numeric <= 1e-9
    else:  # an approximate rule must really change the function
        assert cert.changes_function


def _wrong_reassociate(d, site):
    """Reassociation that ignores the side condition: the inner sum takes every summed axis
    of its factors, even one the mask outside also carries."""
    e = Edit(d)
    b = d.box(site.box)
    group = [b.inputs[i] for i in site.params]
    rest = [u for i, u in enumerate(b.inputs) if i not in site.params]
    out = set(d.wires[b.id].axes)
    kept = []
    for u in group:
        kept.extend(a for a in u.axes if a not in kept and a in out)
    inner = e.add("contract", group, tuple(kept), "part", before=b.id)
    e.set_inputs(b.id, rest + [inner])
    return e.done()


def _wrong_decay_flip(d, site):
    """The transposed decay without the one-step shift of its log-decays."""
    e = Edit(d)
    b = d.box(site.box)
    decay = d.producer(d.producer(b.inputs[0].wire).inputs[0].wire)
    t, s = decay.attr("along")
    la = decay.inputs[0]
    flipped = e.add("flip", [la], la.axes, "_", before=decay.id, along=(t,))
    use = anatomy.Use(flipped.wire, tuple(s if a == t else a for a in la.axes))
    mask = e.add("decay", [use], sequence.decay_axes(use.axes, s, t), "_",
                 before=decay.id, along=(s, t))
    e.redirect(b.id, mask)
    return e.done()


def _find_shift_through_exp(d):
    for b in d.boxes:
        p = d.producer(b.inputs[0].wire) if b.op == "shift" else None
        if p is not None and p.op == "exp":
            yield Site("shift_exp", b.id)


def _shift_through_exp(d, site):
    """shift(exp(x)) = exp(shift(x)): false, exp(0) = 1 is not 0."""
    e = Edit(d)
    b = d.box(site.box)
    p = d.producer(b.inputs[0].wire)
    (axis,) = b.attr("along")
    shifted = e.add("shift", [p.inputs[0]], p.inputs[0].axes, "_", before=p.id, along=(axis,))
    e.set_inputs(p.id, [shifted])
    e.redirect(b.id, b.inputs[0])
    return e.done()


SHIFT_EXP = """
anatomy w(v[t, p]) -> y[t, p]
  dims p = 2
  y[t, p] = shift(exp(v), t)
"""

WRONG_RULES = [
    Rule("wrong_reassociate", EXACT, "Σ_s M[t,s] k[s] v[s] = M · Σ_s k v (false)",
         algebra.find_reassociate, _wrong_reassociate,
         witnesses=RULES["reassociate"].witnesses),
    Rule("wrong_decay_flip", EXACT, "flip flip L(a) = L(flip a)ᵀ (false: off by one)",
         sequence.find_decay_flip, _wrong_decay_flip,
         witnesses=RULES["decay_flip"].witnesses[:1]),
    Rule("shift_exp", EXACT, "shift(exp x) = exp(shift x) (false)",
         _find_shift_through_exp, _shift_through_exp,
         witnesses=(SHIFT_EXP,)),
    Rule("softmax_as_exact", EXACT, RULES["softmax_to_features"].statement,
         RULES["softmax_to_features"].find, RULES["softmax_to_features"].rewrite,
         witnesses=RULES["softmax_to_features"].witnesses),
]


@pytest.mark.parametrize("rule", WRONG_RULES, ids=lambda r: r.name)
def test_the_certifier_rejects_wrong_rules(rule):
    cert = certify(rule, numeric_lengths=(16,))
    assert not cert.ok
    assert cert.sites >= 1 and not all(cert.symbolic)
    assert cert.worst_numeric > 1e-6
    assert any("differs" in p for p in cert.problems)


def test_a_witness_the_rule_does_not_apply_to_fails_the_certificate():
    rule = Rule("flip_flip", EXACT, "flip(flip(x)) = x", RULES["flip_flip"].find,
                RULES["flip_flip"].rewrite,
                witnesses=("anatomy w(v[t, p]) -> y[t, p]\n  dims p = 2\n  y[t, p] = v * 2\n",))
    cert = certify(rule)
    assert not cert.ok and "does not apply" in cert.problems[0]


@pytest.mark.parametrize("name", ["linear_core", "retention_core", "ssd_core",
                                  "quasiseparable_core", "softmax_core"])
def test_the_symbolic_interpreter_agrees_with_the_paper_references(name):
    """Two independent evaluations of the cores: sympy (substituted) vs tests/references."""
    d = load_zoo(name)
    T = 4
    inputs = random_inputs(d, B=1, T=T, seed=3)
    values = {}
    sizes = {p.name: tuple(inputs[p.name].shape[1:]) for p in d.inputs}
    interp = Interpreter(d, T)
    for p in d.inputs:  # size the free axes of the inputs as the references do
        for a, n in zip(p.axes, sizes[p.name]):
            if d.shapes.size(a) is None:
                interp.bound[d.shapes.sizes.find(a)] = n
    out = interp.run()
    for p in d.inputs:
        arr = inputs[p.name][0].numpy().ravel()
        values.update({sympy.Symbol(f"{p.name}_{i}", real=True): float(v)
                       for i, v in enumerate(arr)})
    exprs = out["y"].arr
    f = sympy.lambdify(list(values), list(exprs.ravel()), "math")
    got = np.array(f(*values.values()), dtype=float).reshape(exprs.shape)
    want = REFERENCES[name][1](inputs, None)[0].numpy()
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-10


# -- proofs ------------------------------------------------------------------------------------
PROOFS = [
    ("forms.anat:ssm_core", "cores.anat:ssd_core", {}),
    ("cores.anat:retention_core", "forms.anat:retention_recurrent_core", {}),
    ("cores.anat:retention_core", "forms.anat:retention_chunkwise_core", {}),
    ("forms.anat:retention_recurrent_core", "forms.anat:retention_chunkwise_core", {}),
    ("cores.anat:hydra_construction_core", "cores.anat:quasiseparable_core", {}),
    ("mqa.anat:mqa", "gqa.anat:gqa", {"g": 1, "d": 64}),
    ("mha.anat:mha", "gqa.anat:gqa", {"g": 8, "d": 64}),
]


@pytest.mark.parametrize("left,right,dims", PROOFS, ids=lambda v: v if isinstance(v, str)
                         else "")
def test_required_proofs_are_found_and_replay(left, right, dims, tmp_path):
    result = prove(side(left, **dims), side(right, **dims))
    assert isinstance(result, Proof), result.render()
    assert not result.approximate and result.rules_used
    path = tmp_path / "proof.json"
    result.save(path)
    check = verify_proof(path)
    assert check.ok, check.render()
    text = result.render()
    steps = [line for line in text.splitlines() if line.startswith("step ")]
    assert len(steps) == len(result.chain()) and "∎" in text


def test_every_step_of_a_proof_is_valid_anat_text():
    result = prove(side("cores.anat:hydra_construction_core"),
                   side("cores.anat:quasiseparable_core"))
    for _, step in result.chain():
        if any(b.op == "call" for b in step.diagram.boxes):
            continue  # a call needs its callee's file
        again = anatomy.load(step.diagram.to_text())[step.diagram.name]
        assert anatomy.canonical(again, normalise=False) == \
            anatomy.canonical(step.diagram, normalise=False)


REFUSALS = [
    ("cores.anat:softmax_core", "cores.anat:linear_core"),
    ("cores.anat:linear_core", "forms.anat:linear_bidirectional_core"),
    ("forms.anat:softmax_bidirectional_core", "forms.anat:softmax_reassociated_core"),
]


@pytest.mark.parametrize("left,right", REFUSALS, ids=lambda v: v)
def test_false_claims_are_refused_with_a_counterexample(left, right):
    result = prove(side(left), side(right))
    assert isinstance(result, Refusal)
    cex = result.counterexample
    assert cex is not None and abs(cex.left - cex.right) > 1e-6 and cex.rel_rmse > 1e-6
    # the counterexample is real: recompute it from the reported inputs
    a, b = side(left).diagram, side(right).diagram
    from anatomy.verify.numeric import compile_pair
    from anatomy.verify.numeric import random_inputs as inputs_for
    ma, mb, _ = compile_pair(a, b)
    xs = inputs_for(a, cex.length, cex.seed)
    with torch.no_grad():
        assert float(ma(*xs)[cex.index]) == pytest.approx(cex.left)
        assert float(mb(*xs)[cex.index]) == pytest.approx(cex.right)
    assert "not equal" in result.render()


APPROX = """
anatomy additive(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  dims h = 2, n = 4, p = 4
  param va[h, n] ~ normal(0, 1)
  score[h, t, s] = va * tanh(q + k[s, h, n])
  w[h, t, s] = softmax(score, s, mask=causal(t, s))
  y[t, h, p] = w * v[s, h, p]

anatomy dot(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  dims h = 2, n = 4, p = 4
  score[h, t, s] = q * k[s, h, n]
  w[h, t, s] = softmax(score, s, mask=causal(t, s))
  y[t, h, p] = w * v[s, h, p]

anatomy linearised(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  dims h = 2, n = 4, p = 4
  fq[t, h, n] = elu(q) + 1
  fk[t, h, n] = elu(k) + 1
  score[h, t, s] = fq * fk[s, h, n] * causal(t, s)
  w[h, t, s] = normalise(score, s)
  y[t, h, p] = w * v[s, h, p]
"""


@pytest.mark.parametrize("left,right", [("additive", "dot"), ("dot", "linearised")])
def test_approximate_steps_only_when_allowed_and_flagged(left, right):
    program = anatomy.load(APPROX)
    refused = prove(program[left], program[right])
    assert isinstance(refused, Refusal) and refused.counterexample is not None
    proof = prove(program[left], program[right], allow_approximate=True)
    assert isinstance(proof, Proof) and proof.approximate
    assert "[APPROXIMATE]" in proof.render() and "~" in proof.render().splitlines()[0]
    kinds = {s.rule.kind for _, s in proof.chain()}
    assert APPROXIMATE in kinds


def test_a_tampered_proof_fails_verification(tmp_path):
    result = prove(side("forms.anat:ssm_core"), side("cores.anat:ssd_core"))
    data = result.to_json()
    data["left_steps"][0]["hash"] = "0" * 24
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    assert not verify_proof(path).ok
    data = result.to_json()
    data["left_steps"].pop()  # the chains no longer meet
    path.write_text(json.dumps(data))
    assert not verify_proof(path).ok
    path.write_text("{not json")
    with pytest.raises(AnatError):
        verify_proof(path)


def test_sides_with_different_signatures_are_an_error():
    with pytest.raises(AnatError, match="signature"):
        prove(side("cores.anat:softmax_core"), side("cores.anat:ssd_core"))


# -- canonical forms ---------------------------------------------------------------------------
RENAMED = """
anatomy a(x[t, d]) -> y[t, d]
  dims d = 16, h = 2, n = d / h
  q[t, h, n] = linear(x)
  k[t, h, n] = linear(x)
  v[t, h, n] = linear(x)
  score[h, t, s] = q * k[s, h, n] / sqrt(n)
  w[h, t, s] = softmax(score, s, mask=causal(t, s))
  o[t, h, n] = w * v[s, h, n]
  y[t, d] = linear(o)

anatomy b(inp[i, e]) -> out[i, e]
  dims e = 16, g = 2, m = e / g
  vals[i, g, m] = linear(inp)
  keys[i, g, m] = linear(inp)
  qs[i, g, m] = linear(inp)
  sc[g, i, j] = qs * keys[j, g, m] / sqrt(m)
  wt[i, j, g] = softmax(sc, j, mask=causal(i, j))
  mixed[i, g, m] = wt * vals[j, g, m]
  out[i, e] = linear(mixed)

anatomy c(x[t, d]) -> y[t, d]
  dims d = 16, h = 2, n = d / h
  q[t, h, n] = linear(x)
  k[t, h, n] = linear(x)
  v[t, h, n] = linear(x)
  score[h, t, s] = q * k[s, h, n] / sqrt(n)
  w[h, t, s] = softmax(score, t, mask=causal(t, s))
  o[t, h, n] = w * v[s, h, n]
  y[t, d] = linear(o)
"""


def test_canonical_ignores_names_axis_order_and_statement_order():
    p = anatomy.load(RENAMED)
    assert anatomy.canonical(p["a"]) == anatomy.canonical(p["b"])
    assert anatomy.canonical(p["a"]) != anatomy.canonical(p["c"])  # softmax over t


def test_canonical_classes_of_the_zoo():
    """Distinct zoo entries hash apart, except the ones a proof makes equal."""
    hashes = {}
    for stem, program in anatomy.zoo().items():
        for d in program:
            hashes.setdefault(anatomy.canonical(d), []).append(f"{stem}:{d.name}")
    merged = sorted(sorted(v) for v in hashes.values() if len(v) > 1)
    assert merged == [
        ["cores:hydra_construction_core", "cores:quasiseparable_core"],
        ["cores:linear_core", "linear_attention:causal_mix"],
        ["cores:retention_core", "forms:retention_chunkwise_core",
         "forms:retention_recurrent_core"],
        ["cores:ssd_core", "forms:ssm_core"],
    ]


def test_canonical_merges_gqa_extremes_with_mha_and_mqa():
    mha, mqa = load_zoo("mha", d=64), load_zoo("mqa", d=64)
    assert anatomy.canonical(load_zoo("gqa", d=64, g=8)) == anatomy.canonical(mha)
    assert anatomy.canonical(load_zoo("gqa", d=64, g=1)) == anatomy.canonical(mqa)
    assert anatomy.canonical(load_zoo("gqa", d=64, g=2)) not in {anatomy.canonical(mha),
                                                                 anatomy.canonical(mqa)}


# -- the CLI -----------------------------------------------------------------------------------
def run_cli(*args):
    from anatomy.cli import main
    return main(list(args))


def test_cli_prove_verify_and_refuse(tmp_path, capsys):
    proof = tmp_path / "p.json"
    assert run_cli("prove", str(ZOO / "forms.anat") + ":ssm_core",
                   str(ZOO / "cores.anat") + ":ssd_core", "--json", str(proof)) == 0
    out = capsys.readouterr().out
    assert "unscan" in out and "∎" in out
    assert run_cli("verify-proof", str(proof)) == 0
    assert "proof verified" in capsys.readouterr().out
    assert run_cli("prove", str(ZOO / "cores.anat") + ":softmax_core",
                   str(ZOO / "cores.anat") + ":linear_core") == 1
    assert "not equal" in capsys.readouterr().out


def test_cli_prove_bad_input_exits_2(capsys):
    assert run_cli("prove", str(ZOO / "cores.anat") + ":nope",
                   str(ZOO / "cores.anat") + ":ssd_core") == 2
    assert "no anatomy named `nope`" in capsys.readouterr().err
    assert run_cli("prove", str(ZOO / "cores.anat"), str(ZOO / "cores.anat:ssd_core")) == 2
    assert "name one" in capsys.readouterr().err
    assert run_cli("verify-proof", "/nonexistent.json") == 2


def test_cli_rules_lists_the_table(capsys):
    assert run_cli("rules") == 0
    out = capsys.readouterr().out
    assert all(name in out for name in RULES)


def test_cli_prove_draws_the_proof(tmp_path, capsys):
    out = tmp_path / "pics"
    assert run_cli("prove", str(ZOO / "cores.anat") + ":hydra_construction_core",
                   str(ZOO / "cores.anat") + ":quasiseparable_core", "--brief",
                   "--svg", str(out)) == 0
    steps = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    svgs = sorted(out.glob("step-*.svg"))
    assert len(svgs) == len(steps) + 1  # the starting diagram, then one per step
    index = (out / "index.html").read_text()
    assert "decay_flip" in index and "upper triangular" in index
    from anatomy.render.style import HIGHLIGHT  # the rewritten region is outlined
    assert HIGHLIGHT in svgs[1].read_text() and HIGHLIGHT not in svgs[0].read_text()
