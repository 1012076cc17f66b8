"""The tasks a search trains and evaluates on: multi-query associative recall (synthetic: in
Zoology's layout, `mqar`, or the first, leaky one, `mqar_interleaved`) and character-level
(byte-level) language modelling on a corpus.

A task gives training batches (a function of the trial's seed and the step, so a trial run
twice sees the same data) and evaluates a model on a held-out set that is the same for
every trial: for MQAR, sequences drawn from a fixed seed; for language modelling, the last
tenth of the corpus. A recall task also has a `floor`: the best accuracy without recall on
its held-out set (anatomy.search.mqar.no_recall_floor); language modelling has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .corpus import load_corpus
from .mqar import IGNORE, check_interleaved, check_mqar, mqar, mqar_interleaved, no_recall_floor

EVAL_SEED = 2023  # the held-out MQAR sequences, the same for every trial and variant


@dataclass(frozen=True)
class TaskSettings:
    """What a trial needs to rebuild its task anywhere (plain data: sent to workers)."""

    name: str                 # "mqar", "mqar_interleaved" or "lm"
    seq_len: int = 64
    batch: int = 32
    vocab: int = 8192         # MQAR's vocabulary (language modelling uses the 256 bytes)
    pairs: int = 4            # MQAR's key-value pairs per sequence (Zoology: seq_len / 16)
    eval_sequences: int = 256
    corpus: str | None = None  # language modelling: a text file; None = the default corpus


class Task:
    """Batches and evaluation for one task. `metric` is the leaderboard's number;
    `higher_is_better` says which way it ranks."""

    metric: str
    higher_is_better: bool
    vocab: int
    floor: float | None = None  # the best score without recall (recall tasks)

    def __init__(self, settings: TaskSettings):
        self.settings = settings

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        raise NotImplementedError


class RecallTask(Task):
    """MQAR in Zoology's layout: accuracy of the value predicted at each query (a key asked
    again), scored at the queries only (anatomy.search.mqar)."""

    metric = "accuracy"
    higher_is_better = True
    generate = staticmethod(mqar)
    problem = staticmethod(check_mqar)

    def __init__(self, settings: TaskSettings):
        super().__init__(settings)
        self.vocab = settings.vocab
        g = torch.Generator().manual_seed(EVAL_SEED)
        self.held_out = self.generate(settings.eval_sequences, settings.seq_len,
                                      settings.vocab, settings.pairs, g)
        self.floor = no_recall_floor(*self.held_out, settings.pairs)

    def batch(self, generator):
        s = self.settings
        return self.generate(s.batch, s.seq_len, s.vocab, s.pairs, generator)

    @torch.no_grad()
    def evaluate(self, model):
        tokens, labels = self.held_out
        correct = total = 0
        loss_sum = 0.0
        for i in range(0, len(tokens), self.settings.batch):
            x, y = tokens[i:i + self.settings.batch], labels[i:i + self.settings.batch]
            scored = y != IGNORE
            logits = model(x, scored)
            loss_sum += F.cross_entropy(logits, y[scored], reduction="sum").item()
            correct += (logits.argmax(-1) == y[scored]).sum().item()
            total += scored.sum().item()
        return {"accuracy": correct / total, "loss": loss_sum / total}


class InterleavedRecallTask(RecallTask):
    """MQAR in the first, leaky layout (each query followed by its answer in the input):
    kept to reproduce the first study; its floor is far above 1 / pairs."""

    generate = staticmethod(mqar_interleaved)
    problem = staticmethod(check_interleaved)


class LanguageTask(Task):
    """Byte-level language modelling: bits per byte on the held-out tenth of the corpus."""

    metric = "bits_per_byte"
    higher_is_better = False
    vocab = 256

    def __init__(self, settings: TaskSettings):
        super().__init__(settings)
        self.corpus = load_corpus(settings.corpus)
        self.train = torch.frombuffer(bytearray(self.corpus.train), dtype=torch.uint8).long()
        held = torch.frombuffer(bytearray(self.corpus.held_out), dtype=torch.uint8).long()
        span = settings.seq_len + 1
        windows = min(settings.eval_sequences, len(held) // span)
        if windows < 1:
            from anatomy.errors import AnatError
            raise AnatError(f"the corpus's held-out tenth ({len(held)} bytes) is shorter than "
                            f"one sequence of {span}", hint="use a longer corpus or --seq-len")
        self.held_out = held[:windows * span].view(windows, span)

    def batch(self, generator):
        s = self.settings
        starts = torch.randint(0, len(self.train) - s.seq_len - 1, (s.batch,),
                               generator=generator)
        rows = self.train[starts.unsqueeze(1) + torch.arange(s.seq_len + 1)]
        return rows[:, :-1], rows[:, 1:]

    @torch.no_grad()
    def evaluate(self, model):
        loss_sum, count = 0.0, 0
        for i in range(0, len(self.held_out), self.settings.batch):
            rows = self.held_out[i:i + self.settings.batch]
            logits = model(rows[:, :-1])
            loss_sum += F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten(),
                                        reduction="sum").item()
            count += rows[:, 1:].numel()
        loss = loss_sum / count
        return {"bits_per_byte": loss / math.log(2), "loss": loss}


TASKS = {"mqar": RecallTask, "mqar_interleaved": InterleavedRecallTask, "lm": LanguageTask}


def make_task(settings: TaskSettings) -> Task:
    return TASKS[settings.name](settings)
