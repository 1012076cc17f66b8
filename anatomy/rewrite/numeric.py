"""Numeric comparison of two diagrams: compile both (explicit parallel form, float64), run
them on the same random inputs with the same parameters, and measure how far apart they
are. Used to certify rules on larger sizes than sympy can and to find counterexamples for
claims the prover refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from anatomy.ir import Diagram

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


def compile_pair(a: Diagram, b: Diagram):
    """Both diagrams compiled in float64, `b` given `a`'s parameter values wherever a
    parameter of the same name (or the same last name) and size exists. Returns the two
    modules and whether every parameter of `b` was matched."""
    import torch

    from anatomy.lowering.module import compile_diagram
    from anatomy.shapes import check
    ma = compile_diagram(a, check(a, a.shapes.dims), form="parallel").double()
    mb = compile_diagram(b, check(b, b.shapes.dims), form="parallel").double()
    pa = dict(ma.named_parameters())
    by_leaf: dict[str, list] = {}
    for name, p in pa.items():
        by_leaf.setdefault(name.rsplit(".", 1)[-1], []).append(p)
    matched = True
    with torch.no_grad():
        for name, p in mb.named_parameters():
            src = pa.get(name)
            if src is None and len(by_leaf.get(name.rsplit(".", 1)[-1], [])) == 1:
                src = by_leaf[name.rsplit(".", 1)[-1]][0]
            if src is not None and src.numel() == p.numel():
                p.copy_(src.reshape(p.shape))
            else:
                matched = False
    return ma, mb, matched


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


def distance(a: Diagram, b: Diagram, length: int, seed: int = 0):
    """(relative RMSE, worst output, its index, left, right) between the two diagrams on
    one random input; None when their parameters cannot be matched."""
    import torch
    ma, mb, matched = compile_pair(a, b)
    if not matched:
        return None
    inputs = random_inputs(a, length, seed)
    with torch.no_grad():
        ya, yb = ma(*inputs), mb(*inputs)
    ya = ya if isinstance(ya, tuple) else (ya,)
    yb = yb if isinstance(yb, tuple) else (yb,)
    worst = (0.0, None, (), 0.0, 0.0)
    for port, x, y in zip(a.outputs, ya, yb):
        scale = x.pow(2).mean().sqrt().clamp_min(1e-30)
        err = float((x - y).pow(2).mean().sqrt() / scale)
        if err > worst[0] or worst[1] is None:
            i = int((x - y).abs().argmax())
            index = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), x.shape))
            worst = (err, port.name, index, float(x[index]), float(y[index]))
    return worst


def find_counterexample(a: Diagram, b: Diagram, lengths=(1, 2, 3, 5, 8),
                        seeds=(0, 1)) -> Counterexample | None:
    """The first random input (short sequences first) on which the diagrams differ."""
    from anatomy.errors import AnatError
    for length in lengths:
        for seed in seeds:
            try:
                found = distance(a, b, length, seed)
            except AnatError:
                return None
            if found is None:
                return None
            err, output, index, left, right = found
            if err > TOLERANCE:
                return Counterexample(length, seed, output, index, left, right, err)
    return None
