"""The family proofs of issues 15 and 16, through the public prover (`anatomy.prove` and
`anatomy prove`) on small .anat programs:

- per-channel decay (issue 15): a scalar decay is the per-channel decay broadcast over the
  key channel n, so SSD (log a[t, h]), retention (log a[h]) and causal linear attention
  (log a = 0) are gated linear attention with one value in every channel (`decay_channel`);
  the recurrence (`scan`) and the chunked `ssd` box equal the masked form for a decay per
  channel (`unscan`, `unchunk`);
- the delta rule (issue 16): its chunked WY/UT algorithm is the recurrence for every chunk
  size (`delta_unchunk`; the rule the compiler's chunked form rests on); Gated DeltaNet
  with log-gate 0 is DeltaNet and KDA with a gate constant across channels is Gated DeltaNet
  (`delta_gate`), as cores and as the zoo's programs;
- near misses refused with a counterexample: a per-channel decay that varies along n against
  the scalar decay, Gated DeltaNet with its gate against DeltaNet, KDA with a gate that
  varies across channels against Gated DeltaNet.

The cores are the claims of tests/prover_claims.py: tests/test_prover.py checks each
outcome there (and that each counterexample is real, recomputed from its input, relative
RMSE >= 1e-3); here each proof is checked to use the new rule, the zoo's Gated DeltaNet
is proved equal to DeltaNet with a zero gate and refused with its gate (`anatomy prove`),
and the certificates are shown not to be vacuous. (DeltaNet against causal linear attention
is tests/test_delta_rule_box.py's.) Every rule is certified in tests/test_rewrite.py: sympy
at length 4 (differences simplify to exactly 0) and float64 at lengths 64 and 512 (relative
RMSE <= 1e-9), the delta-rule rules with the chunked kernel against the recurrence.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import anatomy
from anatomy.rewrite import RULES, Proof, Rule
from anatomy.rewrite.site import EXACT
from anatomy.verify.certify import certify
from tests.prover_claims import load_claims

ZOO = Path(__file__).resolve().parent.parent / "zoo"


@pytest.fixture(scope="module")
def programs():
    return load_claims()


def proved(program, left, right, *rules):
    result = anatomy.prove(program[left], program[right])
    assert isinstance(result, Proof), result.render()
    assert not result.approximate
    assert set(rules) <= set(result.rules_used), result.rules_used
    return result


# -- issue 15: per-channel decay -------------------------------------------------------------------
@pytest.mark.parametrize("left, right", [
    ("gated", "gated_channel"), ("gated", "gated_channel_pow"),
    ("retention", "retention_channel"), ("linear", "linear_channel")])
def test_scalar_decays_are_per_channel_decays_constant_along_n(programs, left, right):
    proved(programs, left, right, "decay_channel")


@pytest.mark.parametrize("form, rule", [("gla_scan", "unscan"), ("gla_chunked", "unchunk")])
def test_per_channel_recurrence_and_chunked_forms_are_the_masked_form(programs, form, rule):
    proved(programs, "gla", form, rule)


def test_the_broadcast_needs_another_factor_on_n():
    """A decay constant along n whose reader has no other factor on n sums n copies: the
    scalar decay would count one. `decay_channel` does not apply there."""
    d = anatomy.load("""
anatomy w(v[t, h, p], log_a[t, h]) -> y[t, h, p]
  dims h = 2, n = 3, p = 2
  la[t, h, n] = log_a + 0 * index(n)
  y[t, h, p] = decay(la, t, s) * v[s, h, p]
""")["w"]
    assert not RULES["decay_channel"].sites(d)


# -- issue 16: the delta rule --------------------------------------------------------------------
@pytest.mark.parametrize("left, right", [
    ("delta_gated", "delta_gated_recurrence"), ("delta_gated_chunk4", "delta_gated_recurrence"),
    ("delta_gated", "delta_gated_chunk4")])
def test_the_chunked_delta_rule_is_its_recurrence(programs, left, right):
    proved(programs, left, right, "delta_unchunk")


@pytest.mark.parametrize("left, right", [
    ("deltanet", "delta_gated_zero"), ("delta_gated", "kda_constant"),
    ("delta_gated", "kda_constant_pow")])
def test_gated_deltanet_and_kda_special_cases(programs, left, right):
    proved(programs, left, right, "delta_gate")


def _zoo_gated_deltanet(gate: str) -> str:
    text = (ZOO / "gated_deltanet.anat").read_text()
    assert "  log_a[t, h] = dt * -exp(a_log)\n" in text
    return text.replace("  log_a[t, h] = dt * -exp(a_log)\n", f"  log_a[t, h] = {gate}\n")


def _cli(*args) -> int:
    from anatomy.cli import main
    return main(list(args))


def test_zoo_gated_deltanet_with_a_zero_gate_is_deltanet(tmp_path, capsys):
    """The zoo's programs, projections, norms and output gate included: with its log-gate
    multiplied by 0, Gated DeltaNet is DeltaNet (its gate's parameters drop out); the proof
    is saved and replayed."""
    zero = tmp_path / "gated_zero.anat"
    zero.write_text(_zoo_gated_deltanet("0 * dt * -exp(a_log)"))
    proof = tmp_path / "proof.json"
    assert _cli("prove", f"{ZOO / 'deltanet.anat'}:deltanet", f"{zero}:gated_deltanet",
                "--dims", "d=64", "--brief", "--json", str(proof)) == 0
    out = capsys.readouterr().out
    assert "delta_gate" in out and "∎" in out
    assert _cli("verify-proof", str(proof)) == 0
    assert "proof verified" in capsys.readouterr().out


def test_zoo_gated_deltanet_is_not_deltanet(capsys):
    assert _cli("prove", f"{ZOO / 'gated_deltanet.anat'}:gated_deltanet",
                f"{ZOO / 'deltanet.anat'}:deltanet", "--dims", "d=64", "--brief") == 1
    assert "they are not equal" in capsys.readouterr().out


# -- the certificates are not vacuous ------------------------------------------------------------
def _drop_gate_find(d):
    from anatomy.rewrite.site import Site
    for b in d.boxes:
        if b.op == "delta_rule" and b.inputs[4].axes:
            yield Site("drop_gate", b.id)


def _drop_gate(d, site):
    from anatomy.rewrite.edit import Edit
    e = Edit(d)
    b = d.box(site.box)
    e.set_inputs(b.id, b.inputs[:4] + (e.const(0, before=b.id),))
    return e.done()


def test_the_certifier_rejects_a_delta_rule_without_its_gate():
    """A wrong rule, delta_rule(..., log a) = delta_rule(..., 0) labelled exact, on the
    gated witnesses of `delta_unchunk`: the symbolic delta rule and the compiled one both
    see the gate, so the certificate fails."""
    witnesses = tuple(w for w in RULES["delta_unchunk"].witnesses if "log_a[t" in w)
    wrong = Rule("drop_gate", EXACT, "log a = 0", _drop_gate_find, _drop_gate,
                 witnesses=witnesses)
    cert = certify(wrong, numeric_lengths=(16,))
    assert not cert.ok and not all(cert.symbolic) and cert.worst_numeric > 1e-3


def test_the_chunked_delta_rule_is_certified_against_the_compiled_recurrence():
    """`delta_unchunk`'s numeric certificate compiles the chunked side in the chunked form
    (the UT kernel) and the recurrence in the parallel form: two computations, so the
    float64 difference is rounding, neither 0 nor above 1e-9 (relative RMSE)."""
    rule = RULES["delta_unchunk"]
    assert rule.numeric_forms == ("chunked", "parallel")
    cert = certify(Rule(rule.name, rule.kind, rule.statement, rule.find, rule.rewrite,
                        witnesses=rule.witnesses[1:2], numeric_forms=rule.numeric_forms),
                   numeric_lengths=(64,))
    assert cert.ok, cert.render()
    assert 0 < cert.worst_numeric <= 1e-9
