"""One trial: build a variant's model, train it with AdamW on a fixed token budget, evaluate.

`run_trial(spec)` is a plain function of plain data (a `TrialSpec`), so the same call runs
in this process, in a local worker process or on a Ray worker. A trial is deterministic
given its seed: run again, it gives the same result. A loss that is NaN or infinite ends the
trial as `diverged`; any other failure ends it as `failed` with the error: a trial never
raises.
"""

from __future__ import annotations

import hashlib
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .tasks import TaskSettings

CURVE_POINTS = 50  # training-loss points kept per trial


@dataclass(frozen=True)
class TrialSpec:
    """Everything a worker needs to run one trial, as plain data."""

    trial: int                 # the trial's id in the search database
    variant: str               # the variant's canonical key
    template_file: str         # where the template was loaded from (resolves its `use`s)
    template_text: str         # its text (workers without the file load this)
    template: str              # the template's name
    choice: tuple[tuple[str, str], ...]
    dims: tuple[tuple[str, int], ...]   # the dims the space was loaded with (--dims)
    task: TaskSettings
    seed: int
    budget: int                # training tokens
    layers: int = 2
    lr: float = 3e-3
    weight_decay: float = 0.1
    threads: int = 1           # torch threads in the worker
    positions: str = "learned"  # none, learned or rope (anatomy.search.positions)


@dataclass
class TrialResult:
    """What a trial gives back: status (done, diverged or failed), the final metric and
    evaluation loss, the training-loss curve as (tokens, loss) points, and timing."""

    status: str
    metric: float | None = None
    eval_loss: float | None = None
    train_loss: float | None = None
    tokens: int = 0
    steps: int = 0
    params: int = 0
    seconds: float = 0.0
    curve: list[tuple[int, float]] = field(default_factory=list)
    error: str | None = None


_SPACES: dict[tuple, object] = {}  # loaded templates, per worker process


def variant_diagram(spec: TrialSpec):
    """The filled template of a trial (each template is loaded once per process)."""
    from .space import SearchSpace
    digest = hashlib.sha256(spec.template_text.encode()).hexdigest()
    key = (spec.template_file, digest, spec.dims)
    if key not in _SPACES:
        path = Path(spec.template_file)
        same = path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest
        _SPACES[key] = SearchSpace.load(path if same else spec.template_text, spec.template,
                                        dict(spec.dims))
    return _SPACES[key].instantiate(spec.choice)


def build_model(spec: TrialSpec, vocab: int):
    from .model import LanguageModel, block_diagram
    from .positions import with_positions
    mixer = with_positions(variant_diagram(spec), spec.positions)
    return LanguageModel(block_diagram(mixer), vocab, spec.layers, spec.positions,
                         spec.task.seq_len)


def nonfinite_at_init(spec: TrialSpec) -> str | None:
    """What is NaN or infinite in the trial's model at initialisation (its seed), on one
    training batch: the logits, the loss or a gradient; None when all are finite. Such a
    model is not trained: its first step would already be NaN."""
    import torch
    from torch.nn import functional as F

    from .mqar import IGNORE
    from .tasks import make_task
    task = make_task(spec.task)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(spec.seed)
        model = build_model(spec, task.vocab)
    finally:
        torch.random.set_rng_state(state)
    tokens, labels = task.batch(torch.Generator().manual_seed(spec.seed))
    scored = labels != IGNORE
    logits = model(tokens, scored)
    if not torch.isfinite(logits).all():
        return f"the logits are not finite ({_count_bad(logits)} of {logits.numel()})"
    loss = F.cross_entropy(logits, labels[scored])
    if not torch.isfinite(loss):
        return f"the loss is {loss.item()}"
    loss.backward()
    for name, p in model.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return f"the gradient of {name} is not finite ({_count_bad(p.grad)} entries)"
    return None


def _count_bad(x) -> int:
    import torch
    return int((~torch.isfinite(x)).sum().item())


def run_trial(spec: TrialSpec) -> TrialResult:
    """Train and evaluate one variant at one seed; never raises."""
    start = time.perf_counter()
    try:
        return _train(spec, start)
    except Exception as e:  # noqa: BLE001 - a trial must not take the search down
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        return TrialResult("failed", seconds=time.perf_counter() - start, error=last)


def _train(spec: TrialSpec, start: float) -> TrialResult:
    import torch
    from torch.nn import functional as F

    from .mqar import IGNORE
    from .tasks import make_task
    torch.set_num_threads(spec.threads)
    task = make_task(spec.task)
    torch.manual_seed(spec.seed)
    model = build_model(spec, task.vocab)
    params = sum(p.numel() for p in model.parameters())
    # fused: one kernel for every parameter's update (on the CPU about 0.5 ms less per step
    # than the per-parameter loop, 5-10% of a small study trial; docs/results.md)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.95),
                            weight_decay=spec.weight_decay, fused=True)
    per_step = spec.task.batch * spec.task.seq_len
    steps = max(1, spec.budget // per_step)
    warmup = max(1, steps // 20)
    data = torch.Generator().manual_seed(spec.seed)
    every = max(1, steps // CURVE_POINTS)
    curve: list[tuple[int, float]] = []
    window: list[float] = []
    result = TrialResult("done", params=params)
    for step in range(steps):
        lr = spec.lr * _schedule(step, steps, warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        tokens, labels = task.batch(data)
        scored = labels != IGNORE
        loss = F.cross_entropy(model(tokens, scored), labels[scored])
        value = loss.item()
        if not math.isfinite(value):
            result.status = "diverged"
            result.error = (f"non-finite at initialisation: training loss {value}" if step == 0
                            else f"training loss {value} at step {step} of {steps}")
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        result.steps, result.tokens = step + 1, (step + 1) * per_step
        window.append(value)
        if len(window) == every or step == steps - 1:
            curve.append((result.tokens, sum(window) / len(window)))
            window = []
    result.curve = curve
    result.train_loss = curve[-1][1] if curve else None
    if result.status == "done":
        model.eval()
        scores = task.evaluate(model)
        result.metric, result.eval_loss = scores[task.metric], scores["loss"]
        if not all(math.isfinite(x) for x in (result.metric, result.eval_loss)):
            result.status = "diverged"
            result.error = (f"evaluation gave {task.metric} {result.metric}, "
                            f"loss {result.eval_loss}")
    result.seconds = time.perf_counter() - start
    return result


def _schedule(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
