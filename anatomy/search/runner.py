"""A search from start to leaderboard: load and enumerate the space, pick the variants, check
them, plan the trials in the database, run them on an executor, and write the results.

Everything that can be refused is refused before any training: a template or filling the
checker rejects, a bad option, variants whose outputs depend on later inputs (the tasks are
causal: such a variant would see the answers) and variants whose model is NaN or infinite
at initialisation (`nonfinite_at_init`), which are recorded as excluded.
Run the same search again and it continues: finished trials are kept, the rest run.
"""

from __future__ import annotations

import hashlib
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anatomy.errors import AnatError

from .executors import make_executor
from .positions import ROPE_SLOT
from .space import Choice, Enumeration, SearchSpace, VariantClass
from .store import SearchStore
from .tasks import TaskSettings
from .train import TrialSpec


@dataclass
class SearchConfig:
    """A search, as the command line gives it."""

    template_file: str
    task: TaskSettings
    template: str | None = None
    dims: dict[str, int] = field(default_factory=dict)
    picks: dict[str, list[str]] = field(default_factory=dict)
    variants: list[str] = field(default_factory=list)   # fillings named explicitly
    limit: int | None = None                            # the first N classes
    sample: int | None = None                           # N classes at random (seeded)
    seeds: int = 1
    budget: int = 200_000
    layers: int = 2
    lr: float = 3e-3
    out: Path = Path("search")
    db: Path | None = None
    executor: str = "local"
    workers: int | None = None
    threads: int = 1
    address: str | None = None
    progress: bool = True
    positions: str = "learned"                          # none, learned or rope


@dataclass
class SearchOutcome:
    """What a finished (or stopped) search left: the leaderboard files and counts."""

    out: Path
    enumeration: Enumeration
    variants: int
    excluded: int
    counts: dict[str, int]
    markdown: str
    seconds: float


def select(space: SearchSpace, config: SearchConfig) -> tuple[Enumeration, list[VariantClass]]:
    """The enumeration and the classes to train, in enumeration order."""
    if config.variants:
        choices = [space.parse_choice(v) for v in config.variants]
        enumeration = space.enumerate(choices=choices)
    else:
        enumeration = space.enumerate()
    classes = list(enumeration.classes.values())
    if config.sample is not None:
        classes = random.Random(0).sample(classes, min(config.sample, len(classes)))
    if config.limit is not None:
        classes = classes[:config.limit]
    return enumeration, classes


def settings(space: SearchSpace, config: SearchConfig) -> dict:
    """What makes two searches the same search (and so resumable one from the other)."""
    text = Path(space.template.program.file).read_bytes() \
        if Path(space.template.program.file).is_file() else b""
    return {"template": space.template.name, "template_sha256": hashlib.sha256(text).hexdigest(),
            "dims": space.dims, "load_dims": dict(sorted(config.dims.items())),
            "task": asdict(config.task), "budget": config.budget,
            "layers": config.layers, "lr": config.lr, "positions": config.positions}


def run_search(config: SearchConfig, log: Callable[[str], None] | None = None) -> SearchOutcome:
    log = log or (lambda line: print(line, file=sys.stderr))
    start = time.perf_counter()
    space = SearchSpace.load(config.template_file, config.template, config.dims, config.picks)
    if config.positions == "rope" and ROPE_SLOT not in space.slots:
        raise AnatError(f"--positions rope rotates the queries and keys of the template's "
                        f"`{ROPE_SLOT}` slot, and {space.template.name} has none",
                        space.template.loc, hint="use --positions learned (any template)")
    enumeration, classes = select(space, config)
    log(f"space {space.template.name}: {enumeration.summary()}")
    for f in enumeration.rejected:
        log(f"  refused by the checker: {f.name}: {f.error}")
    if not classes:
        raise AnatError("no type-correct variant to train",
                        hint="see the fillings refused above, or change --pick/--variant")
    store = SearchStore(config.db or config.out / "search.db", settings(space, config))
    excluded = 0
    for c in classes:
        reason = _exclusion(space, c) or _nonfinite(space, config, c)
        excluded += reason is not None
        store.add_variant(c.key, c.name, c.representative.choice, [m.name for m in c.members],
                          reason)
        if reason is None:
            store.add_trials(c.key, range(config.seeds))
        else:
            log(f"  excluded before training: {c.name}: {reason}")
    log(f"{len(classes)} variants ({excluded} excluded), {config.seeds} seed(s) each, "
        f"{config.budget:,} training tokens per trial; database {store.path}")
    try:
        _run_trials(space, config, store, log)
    finally:
        store.release()
    outcome = write_results(store, config, enumeration, len(classes), excluded)
    store.close()
    outcome.seconds = time.perf_counter() - start
    return outcome


def _exclusion(space: SearchSpace, c: VariantClass) -> str | None:
    """Why a variant is not trained because of what its diagram says (it is not causal), or
    None. Whether it compiles and runs is `_nonfinite`'s test, on the model itself."""
    from anatomy.causality import acausal_reason
    try:
        variant = space.instantiate(c.representative.choice)
    except AnatError as e:
        return f"does not compile: {e.message}"
    found = acausal_reason(variant, variant.shapes)
    if found is not None:
        box, why = found
        return (f"not causal (`{box.op}` making {box.outputs[0]} {why}): it would see the "
                f"answers of a causal task")
    return None


def _nonfinite(space: SearchSpace, config: SearchConfig, c: VariantClass) -> str | None:
    """Why the variant's model (seed 0) is not finite at initialisation, or None."""
    from .train import nonfinite_at_init
    try:
        problem = nonfinite_at_init(_spec(space, config, 0, c.key, 0, c.representative.choice))
    except AnatError as e:
        return f"does not compile: {e.message}"
    except Exception as e:  # noqa: BLE001 - a variant that cannot run is excluded, not fatal
        return f"does not run: {type(e).__name__}: {e}"
    return f"non-finite at initialisation: {problem}" if problem else None


def _spec(space: SearchSpace, config: SearchConfig, trial: int, variant: str, seed: int,
          choice: Choice) -> TrialSpec:
    file = space.template.program.file
    path = Path(file)
    return TrialSpec(trial=trial, variant=variant, template_file=str(path.resolve()),
                     template_text=path.read_text() if path.is_file() else "",
                     template=space.template.name, choice=tuple(map(tuple, choice)),
                     dims=tuple(sorted(config.dims.items())), task=config.task, seed=seed,
                     budget=config.budget, layers=config.layers, lr=config.lr,
                     threads=config.threads, positions=config.positions)


def _run_trials(space: SearchSpace, config: SearchConfig, store: SearchStore,
                log: Callable[[str], None]) -> None:
    choices = {v["key"]: v["choice"] for v in store.variants()}
    names = {v["key"]: v["name"] for v in store.variants()}
    counts = store.counts()
    total = sum(counts.values())
    finished = sum(counts.get(s, 0) for s in ("done", "diverged", "failed"))
    if finished:
        log(f"resuming: {finished} of {total} trials already finished")
    if finished == total:
        return
    executor = make_executor(config.executor, config.workers, config.threads, config.address)
    bar = _progress(total, finished, config.progress)
    in_flight: dict[int, TrialSpec] = {}
    beat = time.monotonic()
    try:
        while True:
            free = executor.capacity - len(in_flight)
            if free > 0:
                for trial, variant, seed in store.claim(free):
                    spec = _spec(space, config, trial, variant, seed, choices[variant])
                    in_flight[trial] = spec
                    executor.submit(spec)
            if not in_flight:
                break
            for spec, result in executor.finished(timeout=2.0):
                in_flight.pop(spec.trial, None)
                if not store.finish(spec.trial, result):
                    continue  # another process took it over: its result stands
                finished += 1
                score = f"{result.metric:.4f}" if result.metric is not None else "–"
                line = (f"[{finished}/{total}] {names[spec.variant]} seed {spec.seed}: "
                        f"{result.status}, {config.task.name} metric {score} "
                        f"({result.seconds:.1f} s)" +
                        (f" {result.error}" if result.error else ""))
                bar.update(1, line)
            if time.monotonic() - beat > 30:
                store.heartbeat()
                beat = time.monotonic()
    finally:
        bar.close()
        executor.close()


class _progress:
    """Trials done and left with an ETA: a tqdm bar on a terminal, else one line per trial."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.bar = None
        self.start, self.done0, self.done, self.total = time.monotonic(), done, done, total
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=done, unit="trial", dynamic_ncols=True)

    def update(self, n: int, line: str) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.write(line)
            self.bar.update(n)
            return
        rate = (self.done - self.done0) / max(1e-9, time.monotonic() - self.start)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        print(f"{line}  [{self.total - self.done} left, ETA {_duration(eta)}]", file=sys.stderr,
              flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def write_results(store: SearchStore, config: SearchConfig, enumeration: Enumeration,
                  variants: int, excluded: int) -> SearchOutcome:
    """Leaderboard (markdown, CSV, JSON) and plots from what the database holds now."""
    from .leaderboard import aggregate, to_csv, to_json, to_markdown
    from .plots import plot_curves, plot_metric
    from .tasks import make_task
    task = make_task(config.task)
    trials = store.trials()
    rows = aggregate(store.variants(), trials, task.higher_is_better)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows, task.metric, task.higher_is_better, task.floor)
    counts = store.counts()
    (out / "leaderboard.md").write_text(markdown)
    (out / "leaderboard.csv").write_text(to_csv(rows))
    (out / "leaderboard.json").write_text(to_json(rows, task.metric, task.higher_is_better, {
        "task": asdict(config.task), "seeds": config.seeds, "budget": config.budget,
        "layers": config.layers, "lr": config.lr, "positions": config.positions,
        "floor": task.floor, "trials": counts,
        "space": {"fillings": len(enumeration.fillings), "refused": len(enumeration.rejected),
                  "classes": len(enumeration.classes)}}))
    title = f"{config.task.name}: {config.budget:,} tokens, {config.seeds} seed(s)"
    plot_curves(trials, rows, out / "loss_curves.png", title)
    plot_metric(trials, rows, task.metric, out / "metric.png", title, task.floor)
    return SearchOutcome(out, enumeration, variants, excluded, counts, markdown, 0.0)
