"""The lowering rules that fuse boxes for the chunked and auto forms (`fuse_attention`,
`fuse_bonus`): what they match and refuse, which form applies them, and that the
normalising rules undo them (a lowered diagram has the canonical form of its source)."""

from __future__ import annotations

import pytest

from anatomy.rewrite import LOWERING, RULES, canonical, lower
from anatomy.verify.certify import certify, witness_diagram

HEAD = """
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h]) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
  qk[h, t, s] = q * k[s, h, n]
"""
MIX = "  y[t, h, p] = w * v[s, h, p]\n"


def ops_after(text: str, form: str) -> list[str]:
    d = witness_diagram(text)
    return [b.op for b in lower(d, form=form).boxes]


@pytest.mark.parametrize("softmax", [
    "softmax(qk, s)",
    "softmax(qk, s, mask=causal(t, s))",
    "softmax(qk, s, mask=window(t, s, size=3))",
    "softmax(qk + log(decay(log_a, t, s)), s)",
    "softmax(qk - 0.5 * (index(t) - index(s)), s, mask=causal(t, s))",
])
def test_the_auto_form_fuses_softmax_attention_into_one_box(softmax):
    text = HEAD + f"  w[h, t, s] = {softmax}\n" + MIX
    after = ops_after(text, "auto")
    assert after.count("attention") == 1
    assert "softmax" not in after and "decay" not in after
    assert "attention" not in ops_after(text, "chunked")
    assert LOWERING["parallel"] == ()


@pytest.mark.parametrize("softmax", [
    # a decay whose query axis is the key axis: it looks the other way
    "softmax(qk + log(decay(log_a[s, h], s, t)), s)",
    # masks other than causal and window stay explicit
    "softmax(qk, s, mask=full(t, s))",
    "softmax(qk, s, mask=causal(t, s) * causal(t, s))",
    # a second sum inside the score
    "softmax(qk + qk2, s)",
])
def test_fuse_attention_refuses_what_the_fused_call_cannot_run(softmax):
    text = HEAD + "  qk2[h, t, s] = k * q[s, h, n]\n" + f"  w[h, t, s] = {softmax}\n" + MIX
    assert not RULES["fuse_attention"].sites(witness_diagram(text))


BONUS = """
anatomy w(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h{n}]) -> y[t, h, p]
  dims h = 2, n = 2, p = 2
  param u[h, n] ~ uniform(-1, 1)
  ks[t, h, n] = shift(k, t)
  vs[t, h, p] = shift(v, t)
  ls[t, h{n}] = shift(log_a, t)
  past[t, h, p] = decay(ls, t, s) * q * ks[s, h, n] * vs[s, h, p]
  now[t, h] = q * u * k
  y[t, h, p] = past + now * v
"""


def test_the_chunked_forms_fuse_rwkv6s_bonus_for_a_decay_per_key_channel():
    per_channel = BONUS.replace("{n}", ", n")
    assert "ssd_bonus" in ops_after(per_channel, "chunked")
    assert "ssd_bonus" in ops_after(per_channel, "auto")
    assert "ssd_bonus" not in ops_after(per_channel, "parallel")
    # a decay per head has no gated kernel with a bonus: ssd, the shifts and the product stay
    per_head = BONUS.replace("{n}", "")
    after = ops_after(per_head, "chunked")
    assert "ssd_bonus" not in after and "ssd" in after and "shift" in after


@pytest.mark.parametrize("name", ["fuse_attention", "fuse_bonus", "chunk"])
def test_a_lowered_diagram_normalises_back_to_its_source(name):
    rule = RULES[name]
    for text in rule.witnesses:
        before = witness_diagram(text)
        after = rule.apply(before, rule.sites(before)[0])
        assert canonical(after) == canonical(before), text


def test_a_wrong_meaning_of_the_fused_box_is_rejected():
    """The certificate compares the fused box's sympy meaning and its torch lowering with the
    explicit boxes: a rule that drops the mask is caught."""
    from dataclasses import replace

    from anatomy.rewrite.edit import Edit
    from anatomy.rewrite.rules.attention import fuse_attention

    def unmasked(d, site):
        e = Edit(fused := fuse_attention(d, site))
        b = fused.box(site.box)
        e.replace(b.id, "attention", b.inputs, **{**dict(b.attrs), "causal": False})
        return e.done()
    rule = replace(RULES["fuse_attention"], name="fuse_attention_unmasked", rewrite=unmasked,
                   witnesses=RULES["fuse_attention"].witnesses[1:2])
    cert = certify(rule, numeric_lengths=(16,))
    assert not cert.ok and not all(cert.symbolic)


def test_a_hand_written_attention_box_runs_in_every_form_and_steps():
    """The op written out (the bare score): every form and the step form agree with the
    explicit softmax attention, and the step form's window keeps a bounded KV cache."""
    import torch

    import anatomy
    explicit = HEAD + \
        "  w[h, t, s] = softmax(qk * 0.5, s, mask=window(t, s, size=3))\n" + MIX
    fused = HEAD.replace("  qk[h, t, s] = q * k[s, h, n]\n", "") + \
        "  y[t, h, p] = attention(q, k[s, h, n], v[s, h, p], t, s, causal=true, window=3, " \
        "scale=0.5)\n"
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(2, 7, 2, 2, generator=gen, dtype=torch.float64) for _ in range(3)]
    xs.append(torch.randn(2, 7, 2, generator=gen, dtype=torch.float64))
    want = anatomy.compile(explicit, form="parallel").double()(*xs)
    for form in ("parallel", "chunked", "auto"):
        module = anatomy.compile(fused, form=form).double()
        torch.testing.assert_close(module(*xs), want)
    module = anatomy.compile(fused, form="auto").double()
    state = module.init_state(2, dtype=torch.float64)
    ys = []
    for a, b in [(0, 4), (4, 5), (5, 7)]:
        y, state = module.step(*(x[:, a:b] for x in xs), state=state)
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys, 1), want)
    assert all(v.shape[1] <= 2 for key, v in state.items() if key.startswith("cache:"))
