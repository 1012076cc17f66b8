"""Canonical forms tell parameters apart: two weights of one shape are two variables, not
one value (a Merkle hash alone would conflate them), while renaming and reordering still do
not change the hash. And the rewrite engine's topological sort matches networkx's."""

from __future__ import annotations

import random

import networkx as nx

import anatomy
from anatomy.canonical import same_structure, structure_hash
from anatomy.ir import Box, Use
from anatomy.rewrite import canonical
from anatomy.rewrite.edit import _topological

SEPARATE = """
anatomy a(x[t, d]) -> y[t, e]
  dims d = 4, e = 3
  param w1[d, e]
  param w2[d, e]
  y[t, e] = x * w1 + x * w2
"""
SHARED = """
anatomy a(x[t, d]) -> y[t, e]
  dims d = 4, e = 3
  param w[d, e]
  y[t, e] = x * w + x * w
"""
# MHA's keys and values have their own weights; tied attention uses one for both
MHA = """
anatomy a(x[t, d]) -> y[t, h, n]
  dims d = 8, h = 2, n = 4
  q[t, h, n] = linear(x)
  k[t, h, n] = linear(x)
  v[t, h, n] = linear(x)
  y[t, h, n] = causal(t, s) * q * k[s, h, n] * v[s, h, n]
"""
TIED = """
anatomy a(x[t, d]) -> y[t, h, n]
  dims d = 8, h = 2, n = 4
  q[t, h, n] = linear(x)
  kv[t, h, n] = linear(x)
  y[t, h, n] = causal(t, s) * q * kv[s, h, n] * kv[s, h, n]
"""
MHA_RENAMED = """
anatomy b(inp[i, m]) -> out[i, g, c]
  dims m = 8, g = 2, c = 4
  vv[i, g, c] = linear(inp)
  kk[i, g, c] = linear(inp)
  qq[i, g, c] = linear(inp)
  out[i, g, c] = causal(i, j) * qq * kk[j, g, c] * vv[j, g, c]
"""


def one(text: str):
    return next(iter(anatomy.load(text)))


def test_two_weights_are_not_one_weight_used_twice():
    a, b = one(SEPARATE), one(SHARED)
    assert not same_structure(a, b)  # the exact (isomorphism) decision
    assert structure_hash(a) != structure_hash(b)


def test_tied_keys_and_values_are_not_mha():
    assert structure_hash(one(MHA)) != structure_hash(one(TIED))
    assert canonical(one(MHA)) != canonical(one(TIED))


def test_renaming_and_reordering_keep_the_hash():
    assert structure_hash(one(MHA)) == structure_hash(one(MHA_RENAMED))
    assert canonical(one(MHA)) == canonical(one(MHA_RENAMED))


def test_topological_order_matches_networkx_lexicographical_sort():
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 12)
        edges = {(i, j) for j in range(n) for i in range(j) if rng.random() < 0.3}
        order = list(range(n))
        rng.shuffle(order)  # the given order: a permutation, not necessarily topological
        boxes = [Box("f", tuple(Use(f"w{i}", ()) for i in range(n) if (i, j) in edges),
                     (f"w{j}",)) for j in order]
        g = nx.DiGraph()
        g.add_nodes_from(f"w{j}" for j in order)
        g.add_edges_from((f"w{i}", f"w{j}") for i, j in edges)
        position = {f"w{j}": k for k, j in enumerate(order)}
        expected = list(nx.lexicographical_topological_sort(g, key=position.get))
        assert [b.id for b in _topological(boxes)] == expected
