"""Multi-query associative recall (MQAR), the synthetic recall task of Arora et al., "Zoology:
Measuring and Improving Recall in Efficient Language Models" (2023), section 3, and the
no-recall floor of a layout.

`mqar` follows Zoology's protocol (their `multiquery_ar`, as in their figure 2):

- the vocabulary's lower half holds the keys (1 .. V/2 - 1; token 0 is the filler), its
  upper half the values (V/2 .. V - 1): disjoint;
- a sequence starts with `pairs` key-value pairs `k_1 v_1 ... k_D v_D` (distinct keys,
  distinct values);
- the rest of the sequence is filler, except that each key is asked once at an even offset
  of the query region: slot i (offset 2i) is chosen with probability proportional to
  (i + 1)^(a - 1), a = 0.01, without replacement, so most queries come soon after the pairs
  and a few far away (a power law of gaps); which key goes to which chosen slot is random;
- the answer is only a label: at a query the label is the key's value, every other label is
  IGNORE, and the value never follows its query in the input.

Zoology's default fills the gaps with random tokens; its figure 2 (the experiment we
reproduce) fills them with 0, as here. Zoology also gives the first drawn gap to the first
key; we shuffle, so the order of the queries says nothing about the order of the pairs.

`mqar_interleaved` is the older layout this project used first: each query is followed by
its own answer in the input, so a model can guess among the values not yet answered
without recalling anything (the floor `no_recall_floor` computes is about 0.54 at 4 pairs,
not 1/4). It is kept, under its own name, to reproduce the first study.

`no_recall_floor(tokens, labels, pairs)`: the best accuracy without recall, on given
sequences. The guesser knows the layout and the pairs' values, but not which key each value
belongs to; it strikes out each value the input has shown after the pairs (an answer given
away) and guesses the most frequent of the rest: right with probability (its count) / (the
values left). In Zoology's layout nothing is shown, the values are distinct, and the floor
is exactly 1 / pairs.
"""

from __future__ import annotations

from collections import Counter

import torch

FILLER = 0
IGNORE = -100  # labels that are not scored (torch's cross_entropy ignore_index)
POWER_A = 0.01  # Zoology's power-law exponent for the query gaps


def key_range(vocab: int) -> range:
    """Zoology's keys: the lower half of the vocabulary without the filler."""
    return range(1, vocab // 2)


def value_range(vocab: int) -> range:
    """Zoology's values: the upper half of the vocabulary."""
    return range(vocab // 2, vocab)


def check_mqar(seq_len: int, vocab: int, pairs: int) -> str | None:
    """Why (seq_len, vocab, pairs) cannot make Zoology-layout sequences, or None."""
    if pairs < 1:
        return "MQAR needs at least one key-value pair"
    if pairs > len(key_range(vocab)):
        return (f"{pairs} distinct keys need a vocabulary of at least {2 * pairs + 2} "
                f"(keys are 1 .. V/2 - 1)")
    if 4 * pairs > seq_len:
        return f"seq_len {seq_len} is too short for {pairs} pairs and their queries " \
               f"(needs {4 * pairs})"
    return None


def gap_probabilities(slots: int, power_a: float = POWER_A) -> torch.Tensor:
    """Zoology's power law over the query slots 0 .. slots - 1: p_i ~ (i + 1)^(a - 1)."""
    p = torch.arange(1, slots + 1, dtype=torch.float64) ** (power_a - 1)
    return p / p.sum()


def mqar(n: int, seq_len: int, vocab: int, pairs: int,
         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` Zoology-layout sequences of `seq_len` tokens and their labels, [n, seq_len] int64."""
    problem = check_mqar(seq_len, vocab, pairs)
    if problem:
        raise ValueError(problem)
    keys, values = key_range(vocab), value_range(vocab)
    k = torch.rand(n, len(keys), generator=generator).argsort(1)[:, :pairs] + keys.start
    v = torch.rand(n, len(values), generator=generator).argsort(1)[:, :pairs] + values.start
    tokens = torch.full((n, seq_len), FILLER, dtype=torch.long)
    labels = torch.full((n, seq_len), IGNORE, dtype=torch.long)
    tokens[:, 0:2 * pairs:2] = k
    tokens[:, 1:2 * pairs:2] = v
    slots = (seq_len - 2 * pairs) // 2
    p = gap_probabilities(slots).float().expand(n, slots)
    where = torch.multinomial(p, pairs, replacement=False, generator=generator)
    order = torch.rand(n, pairs, generator=generator).argsort(1)  # which key asks where
    pos = 2 * pairs + 2 * where
    rows = torch.arange(n).unsqueeze(1)
    tokens[rows, pos] = k.gather(1, order)
    labels[rows, pos] = v.gather(1, order)
    return tokens, labels


def check_interleaved(seq_len: int, vocab: int, pairs: int) -> str | None:
    """Why (seq_len, vocab, pairs) cannot make interleaved-layout sequences, or None."""
    if pairs < 1:
        return "MQAR needs at least one key-value pair"
    if pairs > (vocab - 1) // 2:
        return f"{pairs} distinct keys need a vocabulary of at least {2 * pairs + 1}"
    if 4 * pairs > seq_len:
        return f"seq_len {seq_len} is too short for {pairs} pairs and their queries " \
               f"(needs {4 * pairs})"
    return None


def mqar_interleaved(n: int, seq_len: int, vocab: int, pairs: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The first layout (leaky): the pairs, then each key once more at a random place
    followed by its value, a filler token between queries. Keys are 1 .. K, values
    K+1 .. V-1 with K = (V-1)//2, drawn independently (they may repeat)."""
    problem = check_interleaved(seq_len, vocab, pairs)
    if problem:
        raise ValueError(problem)
    n_keys = (vocab - 1) // 2
    slots = (seq_len - 2 * pairs) // 2  # places for a (key, value) query after the pairs
    k = torch.stack([torch.randperm(n_keys, generator=generator)[:pairs] for _ in range(n)])
    k = k + 1
    v = torch.randint(1 + n_keys, vocab, (n, pairs), generator=generator)
    tokens = torch.full((n, seq_len), FILLER, dtype=torch.long)
    labels = torch.full((n, seq_len), IGNORE, dtype=torch.long)
    tokens[:, 0:2 * pairs:2] = k
    tokens[:, 1:2 * pairs:2] = v
    order = torch.stack([torch.randperm(pairs, generator=generator) for _ in range(n)])
    where = torch.stack([torch.randperm(slots, generator=generator)[:pairs] for _ in range(n)])
    pos = 2 * pairs + 2 * where
    rows = torch.arange(n).unsqueeze(1)
    asked_k, asked_v = k.gather(1, order), v.gather(1, order)
    tokens[rows, pos] = asked_k
    tokens[rows, pos + 1] = asked_v
    labels[rows, pos] = asked_v
    return tokens, labels


def no_recall_floor(tokens: torch.Tensor, labels: torch.Tensor, pairs: int) -> float:
    """Expected accuracy, over the scored positions of these sequences, of the best guess
    without recall (module docstring): the most frequent of the pairs' values that the
    input after the pairs has not yet shown. Values are the tokens at the pairs' odd
    positions (both layouts start with the pairs)."""
    hits, total = 0.0, 0
    for seq, lab in zip(tokens.tolist(), labels.tolist()):
        left = Counter(seq[1:2 * pairs:2])
        for p in range(2 * pairs, len(seq)):
            if lab[p] != IGNORE:  # guessing the most frequent value left: right this often
                hits += max(left.values()) / sum(left.values())
                total += 1
            if left[seq[p]] > 0:
                left[seq[p]] -= 1
    return hits / total if total else 0.0
