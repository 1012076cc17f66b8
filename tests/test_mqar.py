"""The MQAR generators against the task's definition (Arora et al., "Zoology", 2023, §3 and
their `multiquery_ar`), read from each sequence directly, and the no-recall floor against
values worked out by hand.

Zoology's layout: keys from the vocabulary's lower half, values from its upper half; the
pairs first, then each key asked once at an even offset of the query region, gaps drawn from
a power law; the answer is only a label. The interleaved layout (the first, leaky one) puts
each answer right after its query."""

from __future__ import annotations

import pytest
import torch

from anatomy.search.mqar import (
    FILLER,
    IGNORE,
    POWER_A,
    mqar,
    mqar_interleaved,
    no_recall_floor,
)

VOCAB, PAIRS, SEQ = 64, 6, 64


@pytest.fixture(scope="module")
def batch():
    return mqar(300, SEQ, VOCAB, PAIRS, torch.Generator().manual_seed(5))


def test_shapes_and_types(batch):
    tokens, labels = batch
    assert tokens.shape == labels.shape == (300, SEQ)
    assert tokens.dtype == labels.dtype == torch.long


def test_every_sequence_follows_zoologys_layout(batch):
    tokens, labels = batch
    keys, values = set(range(1, VOCAB // 2)), set(range(VOCAB // 2, VOCAB))
    assert not keys & values and FILLER not in keys | values
    for seq, lab in zip(tokens.tolist(), labels.tolist()):
        prefix = seq[:2 * PAIRS]
        pairs = dict(zip(prefix[0::2], prefix[1::2]))
        assert len(pairs) == PAIRS, "keys among the pairs are distinct"
        assert len(set(pairs.values())) == PAIRS, "so are values"
        assert set(pairs) <= keys and set(pairs.values()) <= values, "disjoint halves"
        assert all(x == IGNORE for x in lab[:2 * PAIRS]), "the pairs are not scored"
        asked = []
        for p in range(2 * PAIRS, SEQ):
            if lab[p] != IGNORE:
                asked.append(seq[p])
                assert (p - 2 * PAIRS) % 2 == 0, "queries sit at even offsets"
                assert lab[p] == pairs[seq[p]], "the label is the key's value"
            else:
                assert seq[p] == FILLER, "everything after the pairs but the queries is filler"
        assert sorted(asked) == sorted(pairs), "each key is asked exactly once"
        assert not set(seq[2 * PAIRS:]) & set(pairs.values()), \
            "an answer never appears in the input after the pairs"


def test_gaps_follow_the_power_law():
    """With one pair, the query's slot i (offset 2i after the pair) is drawn with probability
    (i + 1)^(a - 1) / Z: compare the frequencies of 20,000 draws, max abs error < 0.01."""
    seq, n = 34, 20_000
    _, labels = mqar(n, seq, VOCAB, 1, torch.Generator().manual_seed(0))
    slot = ((labels != IGNORE).float().argmax(1) - 2) // 2
    slots = (seq - 2) // 2
    weights = [(i + 1) ** (POWER_A - 1) for i in range(slots)]
    expected = torch.tensor([w / sum(weights) for w in weights])
    observed = torch.bincount(slot, minlength=slots).float() / n
    assert (observed - expected).abs().max() < 0.01
    assert observed[0] > 10 * observed[-1] > 0  # most queries come early, a few late


def test_query_order_is_independent_of_the_pairs_order(batch):
    """Which key is asked first is uniform over the pairs (Zoology's reference gives the
    first drawn gap to the first key; we shuffle)."""
    tokens, labels = batch
    first = []
    for seq, lab in zip(tokens.tolist(), labels.tolist()):
        q = next(p for p in range(2 * PAIRS, SEQ) if lab[p] != IGNORE)
        first.append(seq[:2 * PAIRS:2].index(seq[q]))
    counts = torch.bincount(torch.tensor(first), minlength=PAIRS)
    assert counts.min() > 300 / PAIRS / 2


def test_determinism_by_seed_and_errors():
    for gen in (mqar, mqar_interleaved):
        a = gen(4, SEQ, VOCAB, PAIRS, torch.Generator().manual_seed(1))
        b = gen(4, SEQ, VOCAB, PAIRS, torch.Generator().manual_seed(1))
        c = gen(4, SEQ, VOCAB, PAIRS, torch.Generator().manual_seed(2))
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        assert not torch.equal(a[0], c[0])
        with pytest.raises(ValueError, match="too short"):
            gen(1, 20, VOCAB, PAIRS, torch.Generator())
        with pytest.raises(ValueError, match="distinct keys"):
            gen(1, SEQ, 12, PAIRS, torch.Generator())


def test_the_interleaved_layout_puts_the_answer_after_its_query():
    tokens, labels = mqar_interleaved(100, SEQ, 41, PAIRS, torch.Generator().manual_seed(3))
    for seq, lab in zip(tokens.tolist(), labels.tolist()):
        pairs = dict(zip(seq[:2 * PAIRS:2], seq[1:2 * PAIRS:2]))
        assert set(pairs) <= set(range(1, 21)) and set(pairs.values()) <= set(range(21, 41))
        scored = [p for p in range(SEQ) if lab[p] != IGNORE]
        assert sorted(seq[p] for p in scored) == sorted(pairs)
        for p in scored:
            assert lab[p] == pairs[seq[p]] == seq[p + 1], "the answer follows in the input"


def test_no_recall_floor_by_hand():
    """Zoology's layout shows no answer: 1 / pairs exactly. The interleaved layout strikes
    out each answered value: with 4 distinct values asked in turn, 1/4, 1/3, 1/2, 1."""
    tokens, labels = mqar(200, SEQ, VOCAB, 4, torch.Generator().manual_seed(0))
    assert no_recall_floor(tokens, labels, 4) == pytest.approx(0.25, abs=1e-12)
    seq = [1, 11, 2, 12, 3, 13, 4, 14, 3, 13, 0, 1, 11, 4, 14, 2, 12]
    lab = [IGNORE] * len(seq)
    for p in (8, 11, 13, 15):
        lab[p] = seq[p + 1]
    floor = no_recall_floor(torch.tensor([seq]), torch.tensor([lab]), 4)
    assert floor == pytest.approx((1 / 4 + 1 / 3 + 1 / 2 + 1) / 4, abs=1e-12)
    # a repeated value: the guesser takes the more frequent one (2 of 3 left at the first)
    seq = [1, 11, 2, 11, 3, 13, 1, 11, 2, 11, 3, 13]
    lab = [IGNORE] * 6 + [11, IGNORE, 11, IGNORE, 13, IGNORE]
    floor = no_recall_floor(torch.tensor([seq]), torch.tensor([lab]), 3)
    assert floor == pytest.approx((2 / 3 + 1 / 2 + 1) / 3, abs=1e-12)
