"""Multi-query associative recall (MQAR), the synthetic recall task of Arora et al., "Zoology:
Measuring and Improving Recall in Efficient Language Models" (2023), section 3.

A sequence starts with `pairs` key-value pairs `k_1 v_1 ... k_D v_D` (distinct keys, values
drawn independently); the rest of the sequence holds each key once more, at a random place,
followed by its value, with filler tokens between. At every repeated key the model must
predict the value that followed that key in the first part: the label at that position is
the value, and no other position is scored. Zoology draws the query gaps from a power law
and fills the gaps with random tokens; here gaps are uniform and gaps hold one filler token
(0), so a query is unambiguous: a key token seen after the pairs.

Vocabulary: token 0 is the filler, keys are 1 .. K, values are K+1 .. V-1 with K = (V-1)//2.
"""

from __future__ import annotations

import torch

FILLER = 0
IGNORE = -100  # labels that are not scored (torch's cross_entropy ignore_index)


def key_range(vocab: int) -> range:
    return range(1, 1 + (vocab - 1) // 2)


def value_range(vocab: int) -> range:
    return range(1 + (vocab - 1) // 2, vocab)


def mqar(n: int, seq_len: int, vocab: int, pairs: int,
         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` sequences of `seq_len` tokens and their labels, both [n, seq_len] int64."""
    keys, values = key_range(vocab), value_range(vocab)
    if pairs > len(keys):
        raise ValueError(f"{pairs} distinct keys need a vocabulary of at least {2 * pairs + 1}")
    slots = (seq_len - 2 * pairs) // 2  # places for a (key, value) query after the pairs
    if slots < pairs:
        raise ValueError(f"seq_len {seq_len} is too short for {pairs} pairs and their queries "
                         f"(needs {4 * pairs})")
    k = torch.stack([torch.randperm(len(keys), generator=generator)[:pairs] for _ in range(n)])
    k = k + keys.start
    v = torch.randint(values.start, values.stop, (n, pairs), generator=generator)
    tokens = torch.full((n, seq_len), FILLER, dtype=torch.long)
    labels = torch.full((n, seq_len), IGNORE, dtype=torch.long)
    tokens[:, 0:2 * pairs:2] = k
    tokens[:, 1:2 * pairs:2] = v
    # each key is asked once, in a random order, at one of the slots (chosen without repeats)
    order = torch.stack([torch.randperm(pairs, generator=generator) for _ in range(n)])
    where = torch.stack([torch.randperm(slots, generator=generator)[:pairs] for _ in range(n)])
    pos = 2 * pairs + 2 * where                      # [n, pairs]: where each query key goes
    rows = torch.arange(n).unsqueeze(1)
    asked_k, asked_v = k.gather(1, order), v.gather(1, order)
    tokens[rows, pos] = asked_k
    tokens[rows, pos + 1] = asked_v
    labels[rows, pos] = asked_v
    return tokens, labels
