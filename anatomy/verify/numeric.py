"""Numeric comparison of two diagrams: compile both (explicit parallel form, float64), run
them on the same random inputs with the same parameters, and measure how far apart they
are. Used to certify rules on larger sizes than sympy can and to find counterexamples for
claims the prover refuses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from anatomy.ir import Diagram, freeze_attrs

TOLERANCE = 1e-9  # relative RMSE in float64 below which two diagrams count as equal


@dataclass(frozen=True)
class Counterexample:
    """Inputs on which two diagrams differ, and by how much."""

    length: int
    seed: int
    output: str
    index: tuple[int, ...]
    left: float
    right: float
    rel_rmse: float

    def render(self) -> str:
        where = ", ".join(map(str, self.index))
        return (f"at sequence length {self.length} (random inputs, seed {self.seed}; "
                f"log-decay inputs negative): {self.output}[{where}] = {self.left:.6g} on the "
                f"left but {self.right:.6g} on the right (relative RMSE {self.rel_rmse:.3g})")


def compile_pair(a: Diagram, b: Diagram, forms: tuple[str, str] = ("parallel", "parallel")):
    """Both diagrams compiled in float64, `b` given `a`'s parameter values wherever a
    parameter of the same name (or the same last name) and size exists. Returns the two
    modules and whether every parameter of `b` was matched."""
    from anatomy.lowering.module import compile_diagram
    from anatomy.shapes import check
    ma = compile_diagram(a, check(a, a.shapes.dims), form=forms[0]).double()
    mb = compile_diagram(b, check(b, b.shapes.dims), form=forms[1]).double()
    return ma, mb, not share_parameters(ma, mb)


def share_parameters(ma, mb) -> list[str]:
    """Give `mb` the values of `ma`'s parameters of the same name (or the same last name)
    and size; returns `mb`'s parameters that have none, as `name[shape]`."""
    import torch
    pa = dict(ma.named_parameters())
    by_leaf: dict[str, list] = {}
    for name, p in pa.items():
        by_leaf.setdefault(name.rsplit(".", 1)[-1], []).append(p)
    unmatched = []
    with torch.no_grad():
        for name, p in mb.named_parameters():
            src = pa.get(name)
            if src is None and len(by_leaf.get(name.rsplit(".", 1)[-1], [])) == 1:
                src = by_leaf[name.rsplit(".", 1)[-1]][0]
            if src is not None and src.numel() == p.numel():
                p.copy_(src.reshape(p.shape))
            else:
                unmatched.append(f"{name}[{', '.join(map(str, p.shape))}]")
    return unmatched


def random_inputs(d: Diagram, length: int, seed: int, batch: int = 2):
    """Inputs laid out [batch, axes...]: axes without a size get `length`; inputs whose
    name starts with `log` (log-decays) are negative."""
    import torch
    g = torch.Generator().manual_seed(seed)
    out = []
    for p in d.inputs:
        shape = [batch] + [d.shapes.size(a) or length for a in p.axes]
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        if p.name.startswith("log"):
            x = -torch.nn.functional.softplus(x) * 0.5
        out.append(x)
    return out


def distance(a: Diagram, b: Diagram, length: int, seed: int = 0,
             forms: tuple[str, str] = ("parallel", "parallel")):
    """(relative RMSE, worst output, its index, left, right) between the two diagrams on
    one random input; None when their parameters cannot be matched."""
    ma, mb, matched = compile_pair(a, b, forms)
    if not matched:
        return None
    return _compare(a, ma, mb, length, seed)


def _compare(a: Diagram, ma, mb, length: int, seed: int):
    """(relative RMSE, worst output, its index, left, right) of two compiled modules on
    one random input. The RMSE of the difference is relative to the larger of the two
    outputs' RMS, so a side that is 0 where the other is not differs by 1, not infinitely.
    Entries that neither side computes (both NaN or infinite) are left out; an entry only
    one side computes is an infinite discrepancy."""
    import torch
    inputs = random_inputs(a, length, seed)
    with torch.no_grad():
        ya, yb = ma(*inputs), mb(*inputs)
    ya = ya if isinstance(ya, tuple) else (ya,)
    yb = yb if isinstance(yb, tuple) else (yb,)
    worst = (0.0, None, (), 0.0, 0.0)
    for port, x, y in zip(a.outputs, ya, yb):
        fx, fy = torch.isfinite(x), torch.isfinite(y)
        if not torch.equal(fx, fy):
            i = int((fx != fy).flatten().nonzero()[0])
            index = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), x.shape))
            return (float("inf"), port.name, index, float(x[index]), float(y[index]))
        x, y = torch.where(fx, x, 0.0), torch.where(fy, y, 0.0)
        scale = torch.maximum(x.pow(2).mean().sqrt(), y.pow(2).mean().sqrt())
        err = float((x - y).pow(2).mean().sqrt() / scale.clamp_min(1e-30))
        if err > worst[0] or worst[1] is None:
            i = int((x - y).abs().argmax())
            index = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), x.shape))
            worst = (err, port.name, index, float(x[index]), float(y[index]))
    return worst


# -- the search for a counterexample -----------------------------------------------------------
DECISIVE = 1e-3  # a presented counterexample differs by at least this (relative RMSE)
LENGTHS = (1, 2, 3, 5, 8, 16)
SEEDS = (0, 1)
EPSILON = 1e-3  # a number added to or subtracted from a value, smaller than this, is an epsilon
EPS_OPS = ("normalise", "l2normalise", "layernorm", "rmsnorm", "groupnorm")


@dataclass(frozen=True)
class Search:
    """What comparing two diagrams on random inputs found: the input with the largest
    discrepancy, whether it is a counterexample, and otherwise what was found instead."""

    worst: Counterexample | None
    decisive: bool
    note: str

    @property
    def counterexample(self) -> Counterexample | None:
        return self.worst if self.decisive else None


@dataclass(frozen=True)
class Epsilon:
    """A small constant written in a diagram: a number added or subtracted, or an `eps=`."""

    box: str
    value: float
    where: str


def epsilons(d: Diagram) -> list[Epsilon]:
    """The epsilons of a diagram (composite boxes inlined): numbers 0 < |c| < EPSILON
    that are added or subtracted, and positive `eps` options of normalisers and norms."""
    found = []
    for b in d.boxes:
        if b.op == "const" and 0 < abs(b.attr("value")) < EPSILON and \
                any(r.op in ("add", "sub") for r in d.consumers(b.id)):
            found.append(Epsilon(b.id, b.attr("value"), _where(b)))
        elif b.op in EPS_OPS and b.attr("eps", 0.0) > 0:
            found.append(Epsilon(b.id, b.attr("eps"), f"the eps={b.attr('eps'):g} of "
                                                      f"{b.op} {_where(b)}"))
    return found


def _where(b) -> str:
    loc = b.loc
    if loc.line and loc.text:
        return f"`{loc.text.strip()}` (line {loc.line})"
    return f"box `{b.id}`"


def without_epsilons(d: Diagram) -> Diagram:
    """The diagram with every epsilon set to 0."""
    from anatomy.shapes import checked
    marked = {e.box for e in epsilons(d)}
    boxes = [_with_attrs(b, value=0) if b.op == "const" and b.id in marked else
             _with_attrs(b, eps=0.0) if b.id in marked else b for b in d.boxes]
    return checked(d.replace(boxes=boxes), dict(d.shapes.dims))


def _with_attrs(b, **updates):
    """The box with some attributes changed."""
    return dataclasses.replace(b, attrs=freeze_attrs({**dict(b.attrs), **updates}))


def inlined(d: Diagram) -> Diagram:
    """The diagram with every composite box replaced by its body."""
    from anatomy.rewrite.rules import RULES
    while sites := RULES["inline"].sites(d):
        d = RULES["inline"].apply(d, sites[0])
    return d


def search(a: Diagram, b: Diagram, lengths=LENGTHS, seeds=SEEDS) -> Search:
    """Compare the diagrams on random inputs at every length and seed, and judge the input
    with the largest discrepancy (relative RMSE):

    - at most TOLERANCE: they agree (float64 noise), no counterexample;
    - if setting every epsilon written in either diagram to 0 makes them agree on every
      input, they differ only by the epsilons: no counterexample, and the note says which;
    - at least DECISIVE: a counterexample;
    - in between: too small to present, and the note says how large it was."""
    from anatomy.errors import AnatError
    try:
        ma, mb, matched = compile_pair(a, b)
    except AnatError as e:
        return Search(None, False, "no numeric comparison: " + str(e).splitlines()[0])
    if not matched:
        missing = share_parameters(ma, mb)
        listed = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3
                                           else "")
        return Search(None, False,
                      f"no counterexample either: their parameters could not be matched by "
                      f"name and size ({b.name}'s {listed}), so no one choice of weights "
                      "serves both sides")
    worst = _worst(a, ma, mb, lengths, seeds)
    tried = f"lengths {', '.join(map(str, lengths))}, {len(seeds)} seeds each"
    if worst is None or worst.rel_rmse <= TOLERANCE:
        size = "" if worst is None else f" to {worst.rel_rmse:.1g} relative"
        return Search(worst, False, f"no counterexample either: on random inputs ({tried}) "
                                    f"they agreed{size} (a rule may be missing)")
    small = [e for d in (a, b) for e in epsilons(inlined(d))]
    if small and _agree_without(a, b, lengths, seeds):
        listed = ", ".join(dict.fromkeys(f"the {e.value:g} in {e.where}"
                                         if not e.where.startswith("the eps") else e.where
                                         for e in small))
        return Search(worst, False,
                      f"no counterexample: they differ only by {listed}: with every epsilon "
                      f"set to 0 they agree on random inputs (the largest difference was "
                      f"{worst.rel_rmse:.2g} relative, at sequence length {worst.length})")
    if worst.rel_rmse >= DECISIVE:
        return Search(worst, True, "")
    return Search(worst, False,
                  f"no counterexample: the largest difference on random inputs ({tried}) is "
                  f"{worst.rel_rmse:.2g} relative (at sequence length {worst.length}), below "
                  f"the {DECISIVE:g} a counterexample needs")


def _worst(a: Diagram, ma, mb, lengths, seeds) -> Counterexample | None:
    """The input with the largest discrepancy."""
    worst = None
    for length in lengths:
        for seed in seeds:
            err, output, index, left, right = _compare(a, ma, mb, length, seed)
            if worst is None or err > worst.rel_rmse:
                worst = Counterexample(length, seed, output, index, left, right, err)
    return worst


def _agree_without(a: Diagram, b: Diagram, lengths, seeds) -> bool:
    """Whether the diagrams agree (to TOLERANCE) on every input once their epsilons are 0
    (entries neither side then computes, a 0/0 an epsilon guarded, are left out)."""
    za, zb = without_epsilons(inlined(a)), without_epsilons(inlined(b))
    ma, mb, _ = compile_pair(za, zb)
    return all(_compare(za, ma, mb, n, seed)[0] <= TOLERANCE for n in lengths for seed in seeds)


def find_counterexample(a: Diagram, b: Diagram) -> Counterexample | None:
    """The input on which the diagrams differ most, when that is a counterexample."""
    return search(a, b).counterexample
