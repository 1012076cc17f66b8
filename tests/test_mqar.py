"""The MQAR generator against the task's definition (Arora et al., "Zoology", 2023, §3): a
sequence of key-value pairs, then each key asked again; the label at a repeated key is the
value that followed it among the pairs. The checks read each sequence directly, without the
generator's internals."""

from __future__ import annotations

import pytest
import torch

from anatomy.search.mqar import FILLER, IGNORE, mqar

VOCAB, PAIRS, SEQ = 41, 6, 64


@pytest.fixture(scope="module")
def batch():
    return mqar(200, SEQ, VOCAB, PAIRS, torch.Generator().manual_seed(5))


def test_shapes_and_types(batch):
    tokens, labels = batch
    assert tokens.shape == labels.shape == (200, SEQ)
    assert tokens.dtype == labels.dtype == torch.long


def test_every_sequence_follows_the_definition(batch):
    tokens, labels = batch
    keys = set(range(1, 21))      # (41 - 1) // 2 = 20 keys: 1..20
    values = set(range(21, 41))   # values: 21..40
    for seq, lab in zip(tokens.tolist(), labels.tolist()):
        prefix = seq[:2 * PAIRS]
        pairs = dict(zip(prefix[0::2], prefix[1::2]))
        assert len(pairs) == PAIRS, "keys among the pairs are distinct"
        assert set(pairs) <= keys and set(pairs.values()) <= values
        assert all(x == IGNORE for x in lab[:2 * PAIRS]), "the pairs themselves are not scored"
        asked = []
        for p in range(2 * PAIRS, SEQ):
            if lab[p] != IGNORE:
                key = seq[p]
                asked.append(key)
                assert key in pairs, "a query is a key seen among the pairs"
                assert lab[p] == pairs[key], "its label is the value that followed it"
                assert seq[p + 1] == pairs[key], "the value follows the query in the input"
        assert sorted(asked) == sorted(pairs), "each key is asked exactly once"
        # everything after the pairs that is neither a query nor its answer is filler
        scored = {p for p in range(SEQ) if lab[p] != IGNORE}
        answers = {p + 1 for p in scored}
        for p in range(2 * PAIRS, SEQ):
            if p not in scored and p not in answers:
                assert seq[p] == FILLER


def test_queries_use_many_positions_and_orders(batch):
    tokens, labels = batch
    first = [(row != IGNORE).nonzero()[0].item() for row in labels]
    assert len(set(first)) > 5  # where the first query lands varies
    orders = {tuple(tokens[i][labels[i] != IGNORE].tolist()) for i in range(len(tokens))}
    assert len(orders) > 150    # keys and their order vary


def test_same_seed_same_data_and_errors():
    a = mqar(4, SEQ, VOCAB, PAIRS, torch.Generator().manual_seed(1))
    b = mqar(4, SEQ, VOCAB, PAIRS, torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="too short"):
        mqar(1, 20, VOCAB, PAIRS, torch.Generator())
    with pytest.raises(ValueError, match="distinct keys"):
        mqar(1, SEQ, 9, PAIRS, torch.Generator())
