"""Search spaces: a template, the fillers of each of its slots, and the enumeration of every
filling, type-checked and grouped into classes by canonical form.

Two fillings are one variant when their filled diagrams have the same canonical form
(`anatomy.canonical.canonical`): equal up to names, statement order and the exact
normalising rewrite rules (so GQA with as many groups as heads is MHA, decays compose, ...).

The enumeration walks the tree of partial fillings: each node fills one more slot and
inlines its filler (the `inline` rewrite rule), so a filler is inlined once per node rather
than once per filling; each leaf is the fully inlined diagram, normalised and hashed. Two
fillings get equal keys exactly when `canonical(instantiate(...))` would give them equal
keys (tests and bench/search.py check this). Subtrees run in worker processes.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anatomy.canonical import structure_hash
from anatomy.errors import AnatError, did_you_mean
from anatomy.ir import Diagram, Program
from anatomy.program import load
from anatomy.shapes import checked

from .template import fill, instantiate, slots_of

Choice = tuple[tuple[str, str], ...]  # (slot, filler) pairs, in the template's slot order


@dataclass(frozen=True)
class Filling:
    """One choice of filler per slot; `key` is its canonical form, None when the checker
    refused it (`error` says why)."""

    choice: Choice
    key: str | None
    error: str | None = None

    @property
    def name(self) -> str:
        return choice_name(self.choice)


def choice_name(choice: Choice) -> str:
    """A filling's name: its fillers in slot order, joined by `+`."""
    return "+".join(filler for _, filler in choice)


@dataclass
class VariantClass:
    """Fillings with one canonical form: one variant. The first member names it."""

    key: str
    members: list[Filling] = field(default_factory=list)

    @property
    def representative(self) -> Filling:
        return self.members[0]

    @property
    def name(self) -> str:
        return self.representative.name


@dataclass
class Enumeration:
    """Every filling of a space (or of a subset of it), with timing."""

    fillings: list[Filling]
    seconds: float
    workers: int = 1

    @property
    def rejected(self) -> list[Filling]:
        return [f for f in self.fillings if f.key is None]

    @property
    def classes(self) -> dict[str, VariantClass]:
        """Canonical classes of the type-correct fillings, in order of first appearance."""
        out: dict[str, VariantClass] = {}
        for f in self.fillings:
            if f.key is not None:
                out.setdefault(f.key, VariantClass(f.key)).members.append(f)
        return out

    @property
    def rate(self) -> float:
        """Fillings per second (type-checking, inlining, normalising and hashing)."""
        return len(self.fillings) / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        typed = len(self.fillings) - len(self.rejected)
        classes = self.classes
        collapsed = sum(len(c.members) for c in classes.values() if len(c.members) > 1)
        merged = sum(1 for c in classes.values() if len(c.members) > 1)
        return (f"{len(self.fillings)} fillings, {typed} type-correct "
                f"({len(self.rejected)} refused by the checker), {len(classes)} canonical "
                f"classes: {collapsed} fillings collapsed into {merged} classes; "
                f"{self.seconds:.2f} s, {self.rate:,.0f} fillings/s, {self.workers} "
                f"worker{'s' if self.workers != 1 else ''}")


class SearchSpace:
    """A template and its slots' fillers (all of them, or those `restrict` keeps)."""

    def __init__(self, template: Diagram, restrict: Mapping[str, Sequence[str]] | None = None):
        self.template = template
        self.refused: dict[str, str] = {}  # fillers that do not check at the loaded dims
        self.program = template.program
        self.slots = slots_of(template)
        if not self.slots:
            raise AnatError(f"{template.name} has no slot boxes: it is not a template",
                            template.loc, hint="use `slot NAME(args)` boxes (language.md §20)")
        self.fillers: dict[str, list[str]] = {}
        for slot in self.slots:
            names = [f.name for f in self.program.fillers(slot)]
            if not names:
                raise AnatError(f"slot `{slot}` of {template.name} has no fillers",
                                self.program.slot_locs.get(slot, template.loc),
                                hint=f"declare one: anatomy X(...) -> ... fills {slot}")
            self.fillers[slot] = names
        for slot, keep in (restrict or {}).items():
            if slot not in self.fillers:
                raise AnatError(f"{template.name} has no slot `{slot}`",
                                hint=f"its slots are {', '.join(self.slots)}")
            unknown = [f for f in keep if f not in self.fillers[slot]]
            if unknown:
                raise AnatError(f"`{unknown[0]}` does not fill slot `{slot}`",
                                hint=f"its fillers are {', '.join(self.fillers[slot])}")
            self.fillers[slot] = [f for f in self.fillers[slot] if f in keep]

    @classmethod
    def load(cls, file: str | Path, name: str | None = None,
             dims: Mapping[str, int] | None = None,
             restrict: Mapping[str, Sequence[str]] | None = None) -> SearchSpace:
        """The template `name` of a .anat file (default: the file's one anatomy with slot
        boxes), loaded at `dims`."""
        program, refused = _load(file, dict(dims or {}))
        if name is None:
            templates = [d.name for d in program if slots_of(d)]
            if not templates:
                raise AnatError(f"{file} has no template (an anatomy with slot boxes)",
                                hint="a template uses `slot NAME(args)` boxes (language.md §20)")
            if len(templates) > 1:
                raise AnatError(f"{file} has {len(templates)} templates: name one as FILE:NAME",
                                hint=f"its templates are {', '.join(templates)}")
            name = templates[0]
        if name in refused:
            raise refused[name]
        space = cls(program[name], restrict)
        space.refused = {n: e.message for n, e in refused.items()}
        return space

    @property
    def dims(self) -> dict[str, int]:
        return dict(self.template.shapes.dims)

    @property
    def size(self) -> int:
        n = 1
        for names in self.fillers.values():
            n *= len(names)
        return n

    def choices(self) -> Iterator[Choice]:
        for combo in itertools.product(*(self.fillers[s] for s in self.slots)):
            yield tuple(zip(self.slots, combo))

    def parse_choice(self, text: str) -> Choice:
        """`mha identity scaled_dot ...` (one filler per slot, in slot order) or
        `slot=filler ...` pairs: a filling named on the command line."""
        words = text.replace(",", " ").split()
        if all("=" in w for w in words):
            given = dict(w.split("=", 1) for w in words)
        elif not any("=" in w for w in words) and len(words) == len(self.slots):
            given = dict(zip(self.slots, words))
        else:
            raise AnatError(f"cannot read the filling `{text}`",
                            hint=f"name one filler per slot in the order {' '.join(self.slots)}"
                                 ", or write slot=filler pairs")
        choice = []
        for slot in self.slots:
            if slot not in given:
                raise AnatError(f"filling `{text}` has no filler for slot `{slot}`")
            if given[slot] not in self.fillers[slot]:
                raise AnatError(f"`{given[slot]}` does not fill slot `{slot}`",
                                hint=f"its fillers are {', '.join(self.fillers[slot])}")
            choice.append((slot, given[slot]))
        extra = set(given) - set(self.slots)
        if extra:
            raise AnatError(f"{self.template.name} has no slot `{min(extra)}`")
        return tuple(choice)

    def instantiate(self, choice: Choice) -> Diagram:
        return instantiate(self.template, dict(choice))

    def enumerate(self, workers: int | None = None,
                  choices: Iterable[Choice] | None = None) -> Enumeration:
        """Every filling (or the given ones), checked and keyed by canonical form.
        `workers`: processes (default: one per core for spaces of 200 fillings or more)."""
        start = time.perf_counter()
        if choices is not None:
            fillings = [self._leaf_key(c) for c in choices]
            return Enumeration(fillings, time.perf_counter() - start)
        if workers is None:
            workers = min(os.cpu_count() or 1, 8) if self.size >= 200 else 1
        prefixes = self._split(workers)
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            global _SPACE
            _SPACE = self  # the forked workers inherit the loaded space
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_expand_prefix, prefixes, chunksize=1)
            _SPACE = None
        else:
            workers = 1
            parts = [self._expand_prefix(p) for p in prefixes]
        fillings = [f for part in parts for f in part]
        return Enumeration(fillings, time.perf_counter() - start, workers)

    # -- the tree of partial fillings -------------------------------------------------------
    def _split(self, workers: int) -> list[Choice]:
        """Prefixes (fillers of the first slots) to share among the workers."""
        depth, count = 0, 1
        while depth < len(self.slots) - 1 and count < 4 * workers:
            count *= len(self.fillers[self.slots[depth]])
            depth += 1
        heads = itertools.product(*(self.fillers[s] for s in self.slots[:depth]))
        return [tuple(zip(self.slots, h)) for h in heads]

    def _expand_prefix(self, prefix: Choice) -> list[Filling]:
        d: Diagram | str = self.template
        for slot, filler in prefix:
            d = self._fill_inlined(d, slot, filler)
            if isinstance(d, str):
                break
        return list(self._expand(d, prefix))

    def _expand(self, d: Diagram | str, prefix: Choice) -> Iterator[Filling]:
        rest = self.slots[len(prefix):]
        if isinstance(d, str):  # refused by the checker: so is every completion
            for tail in itertools.product(*(self.fillers[s] for s in rest)):
                yield Filling(prefix + tuple(zip(rest, tail)), None, d)
            return
        if not rest:
            from anatomy.rewrite import normalise
            yield Filling(prefix, structure_hash(normalise(d).diagram))
            return
        slot = rest[0]
        for filler in self.fillers[slot]:
            yield from self._expand(self._fill_inlined(d, slot, filler),
                                    prefix + ((slot, filler),))

    def _fill_inlined(self, d: Diagram, slot: str, filler: str) -> Diagram | str:
        """`d` with `slot` filled by `filler` and the filler inlined; the checker's message
        if the filling does not type-check."""
        from anatomy.rewrite import RULES, Site
        if filler in self.refused:
            return f"{filler}: {self.refused[filler]}"
        try:
            d = fill(d, {slot: filler})
            for b in [b for b in d.boxes if b.op == "call" and b.attr("anatomy") == filler]:
                d = RULES["inline"].apply(d, Site("inline", b.id))  # re-checks the shapes
        except AnatError as e:
            return e.message
        return d

    def _leaf_key(self, choice: Choice) -> Filling:
        from anatomy.rewrite import canonical
        try:  # inlining re-checks each filler in place, which can refuse a filling too
            return Filling(choice, canonical(self.instantiate(choice)))
        except AnatError as e:
            return Filling(choice, None, e.message)


def _load(file: str | Path, dims: dict[str, int]) -> tuple[Program, dict[str, AnatError]]:
    """The program, each anatomy checked at the `dims` it declares. A filler that does not
    check at those dims (gqa with 4 groups when h = 2) is not an error of the file: it is
    returned with its error, and the fillings that use it are refused."""
    program = load(file, strict_dims=False)
    unknown = [k for k in dims if not any(k in d.dims for d in program)]
    if unknown:
        raise AnatError(f"`{unknown[0]}` is not a dim of any anatomy in {program.file}",
                        hint=did_you_mean(unknown[0], {k for d in program for k in d.dims},
                                          "dim"))
    refused: dict[str, AnatError] = {}
    for d in program:
        own = {k: v for k, v in dims.items() if k in d.dims}
        if own:
            try:
                program.anatomies[d.name] = checked(d, own)
            except AnatError as e:
                refused[d.name] = e
    return program, refused


_SPACE: SearchSpace | None = None


def _expand_prefix(prefix: Choice) -> list[Filling]:
    assert _SPACE is not None
    return _SPACE._expand_prefix(prefix)
