"""Positions in the search's model (anatomy.search.positions): rotary encoding inserted on the
queries and keys of the `similarity` slot, checked against attention with RoPE written from
Su et al., "RoFormer" (2021), eq. 34 in its rotate-half form (pairs (i, i + n/2), angles
t * 10000^(-2i/n)); learned absolute positions as a table added to the token embedding; and
`--positions rope` refused for a template without a `similarity` slot."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import anatomy
from anatomy.errors import AnatError
from anatomy.search.model import LanguageModel, block_diagram
from anatomy.search.positions import with_positions
from anatomy.search.space import SearchSpace

ATTENTION = anatomy.zoo_dir() / "search" / "attention.anat"
SOFTMAX = "mha identity scaled_dot causal_mask softmax_normaliser"


def rope_reference(x: torch.Tensor) -> torch.Tensor:
    """x [T, H, N]: rotate (x_i, x_{i+N/2}) by t * 10000^(-2i/N) at position t."""
    t, _, n = x.shape
    half = n // 2
    freq = 10000.0 ** (-2 * torch.arange(half, dtype=torch.float64) / n)
    angle = torch.arange(t, dtype=torch.float64)[:, None, None] * freq
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * angle.cos() - b * angle.sin(), b * angle.cos() + a * angle.sin()], -1)


def test_rope_rotates_the_queries_and_keys_of_softmax_attention():
    from anatomy.lowering import compile as compile_diagram
    space = SearchSpace.load(ATTENTION, dims={"d": 16, "h": 2})
    variant = with_positions(space.instantiate(space.parse_choice(SOFTMAX)), "rope")
    assert sum(b.op == "rope" for b in variant.boxes) == 2
    torch.manual_seed(0)
    mixer = compile_diagram(variant, **dict(variant.shapes.dims)).double()
    weights = dict(mixer.named_parameters())
    x = torch.randn(1, 12, 16, dtype=torch.float64)
    q, k, v = (torch.einsum("td,dhn->thn", x[0], weights[f"q.w_{c}"]) for c in "qkv")
    q, k = rope_reference(q), rope_reference(k)
    score = torch.einsum("thn,shn->hts", q, k) / math.sqrt(8)
    score = score.masked_fill(~torch.ones(12, 12, dtype=torch.bool).tril(), float("-inf"))
    o = torch.einsum("hts,shn->thn", score.softmax(-1), v)
    expected = torch.einsum("thn,hnd->td", o, weights["w_y"])
    got = mixer(x)[0]
    assert ((got - expected).norm() / expected.norm()).item() < 1e-10  # relative RMSE
    without = compile_diagram(space.instantiate(space.parse_choice(SOFTMAX)),
                              **dict(variant.shapes.dims)).double()
    without.load_state_dict(mixer.state_dict())
    assert ((without(x)[0] - expected).norm() / expected.norm()).item() > 1e-2


def test_learned_positions_are_a_table_added_to_the_embedding():
    space = SearchSpace.load(ATTENTION, dims={"d": 16, "h": 2})
    block = block_diagram(space.instantiate(space.parse_choice(SOFTMAX)))
    torch.manual_seed(0)
    plain = LanguageModel(block, vocab=20, layers=1)
    torch.manual_seed(0)
    learned = LanguageModel(block, vocab=20, layers=1, positions="learned", max_len=10)
    count = sum(p.numel() for p in plain.parameters())
    assert sum(p.numel() for p in learned.parameters()) == count + 10 * 16
    tokens = torch.randint(0, 20, (2, 10))
    # the same token at two positions: different logits with positions, equal without
    tokens[:, 0] = 7
    tokens[:, 1:] = 7
    out = learned(tokens)
    assert not torch.allclose(out[:, 0], out[:, 1])
    learned.positions.weight.data.zero_()
    learned.blocks.load_state_dict(plain.blocks.state_dict())
    learned.embed.load_state_dict(plain.embed.state_dict())
    learned.norm.load_state_dict(plain.norm.state_dict())
    learned.head.load_state_dict(plain.head.state_dict())
    assert torch.allclose(learned(tokens), plain(tokens))
    scored = torch.zeros(2, 10, dtype=torch.bool)
    scored[0, 3] = scored[1, 9] = True
    # only the scored positions' logits, as the full model's (max abs difference < 1e-6)
    assert (learned(tokens, scored) - learned(tokens)[scored]).abs().max().item() < 1e-6


def test_rope_needs_a_similarity_slot(tmp_path):
    tpl = tmp_path / "mixer.anat"
    tpl.write_text("slot core(x[t, d]) -> y[t, d]\n\nanatomy tpl(x[t, d]) -> y[t, d]\n"
                   "  dims d = 16\n  y[t, d] = slot core(x)\n\n"
                   "anatomy lin(x[t, d]) -> y[t, d] fills core\n  dims d\n"
                   "  y[t, d] = linear(x, in=[d], out=[d])\n")
    space = SearchSpace.load(tpl)
    with pytest.raises(AnatError, match="similarity"):
        with_positions(space.instantiate(space.parse_choice("lin")), "rope")
    out = subprocess.run([sys.executable, "-m", "anatomy.cli", "search", str(tpl), "--task",
                          "mqar", "--seq-len", "16", "--vocab", "16", "--positions", "rope",
                          "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "similarity" in out.stderr and not (tmp_path / "out").exists()
