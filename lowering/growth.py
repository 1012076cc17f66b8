"""Growing a compiled model along one dim, TokenFormer's progressive scaling (Wang et al.,
"TokenFormer", 2024): append new entries, zero-initialised, to every parameter along that dim.

`grow(module, 256)` rebuilds every anatomy in the module (itself and the composites inside
it) that declares the dim `n`, at n + 256, with all its other dims kept at their values:
a dim derived from the old size (Pattention's n0 in tau = sqrt(n0)) is not re-derived.
For Pattention the function is then unchanged: a zero key token scores 0 for every input,
which leaves each score row's L2 norm as it was, and GeLU(0) = 0 gives it no weight, so its
value contributes nothing whatever it is. Whether zeros leave another anatomy unchanged
depends on that anatomy: `grow` only does the bookkeeping.

Zero keys and zero values together are a stationary point: the new tokens' gradients are
exactly 0 (the value's gradient is their weight, 0; the key's goes through the value, 0),
so plain gradient training never moves them. Zero keys are enough to keep the function;
`fill={"value_tokens": init}` gives the new values another start (tests/test_zoo.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from anatomy.errors import AnatError
from anatomy.shapes import check

from .module import AnatModule, compile_diagram


def grow(module: AnatModule, new_tokens: int, dim: str = "n",
         fill: dict[str, Callable[[torch.Tensor], object]] | None = None) -> AnatModule:
    """A new module with `new_tokens` more entries along `dim` wherever it is declared: the
    old parameters are copied, the new entries are zeros, or filled in place by
    `fill[name]` (a parameter's wire name, e.g. `torch.nn.init.normal_`). `module` is left
    as it is."""
    if not isinstance(new_tokens, int) or isinstance(new_tokens, bool) or new_tokens <= 0:
        raise AnatError(f"grow: new_tokens must be a positive integer, got {new_tokens!r}")
    grown, grew = _rebuild(module, new_tokens, dim, fill or {})
    if not grew:
        raise AnatError(f"grow: no anatomy in {module.diagram.name} declares a dim `{dim}`",
                        hint="grow the dim that counts the parameter tokens, e.g. dim=\"n\"")
    return grown


def _rebuild(module: AnatModule, new: int, dim: str, fill: dict
             ) -> tuple[AnatModule, bool]:
    """A fresh copy of `module` (composites inside it included) grown along `dim` where an
    anatomy declares it, and whether anything grew."""
    children = {name: _rebuild(sub, new, dim, fill) for name, sub in module.named_children()
                if isinstance(sub, AnatModule)}
    declares = dim in module.diagram.dims
    dims = dict(module.shapes.dims)  # every dim pinned at its value
    if declares:
        dims[dim] += new
    out = compile_diagram(module.diagram, check(module.diagram, dims), module.form)
    for name, (child, _) in children.items():
        out.add_module(name, child)
        out.shapes.callees[name] = child.shapes
    axis = out.shapes.sizes.find(dim) if declares else None
    for name, old in module.named_parameters(recurse=False):
        axes = module.diagram.wires[name].axes
        along = [i for i, a in enumerate(axes) if out.shapes.sizes.find(a) == axis]
        value = _pad(old.detach(), along, new, fill.get(name))
        setattr(out, name, nn.Parameter(value, requires_grad=old.requires_grad))
    return out, declares or any(grew for _, grew in children.values())


def _pad(x: torch.Tensor, dims: list[int], new: int, fill=None) -> torch.Tensor:
    """A copy of `x` with `new` entries appended along each of `dims`: zeros, or filled in
    place by `fill`."""
    for d in dims:
        shape = list(x.shape)
        shape[d] = new
        extra = x.new_zeros(shape)
        if fill is not None:
            with torch.no_grad():
                fill(extra)
        x = torch.cat([x, extra], dim=d)
    return x.clone()
