"""Parameters broadcast over batch and time, with their gradients summed by one opaque op.

A parameter (or a value computed from parameters only) that meets activations is broadcast
over the batch and sequence axes, and autograd sums its gradient back over them. Compiled
with dynamic sizes on the CPU, inductor writes that sum as a generated reduction and decides
its accumulation scheme from the reduction's length: it guards ``B·T·k <= 4096`` (a cascade
sum above that), so a later sequence length on the other side of the threshold recompiles
the whole module. Here such a value is expanded to the activations' shape before the
arithmetic, and the gradient of the expansion is ``anatomy::sum_to_size``, a custom op
inductor does not look into: no size guard, no recompile. The forward values are unchanged
(an expand is a view); only traced code (torch.compile, torch.export) takes this path.

Reductions over time that a mixer itself computes in float32 (a softmax's sum over keys,
say) keep inductor's guard at T = 4096: one recompile when a length first crosses it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


@torch.library.custom_op("anatomy::sum_to_size", mutates_args=())
def sum_to_size(grad: Tensor, size: Sequence[int]) -> Tensor:
    """`grad` summed over the axes where `size` is 1 (torch's ``Tensor.sum_to_size``)."""
    out = grad.sum_to_size(list(size))
    return out.clone() if out is grad else out.contiguous()


@sum_to_size.register_fake
def _(grad, size):
    return grad.new_empty(list(size))


def _sum_to_size_setup(ctx, inputs, output) -> None:
    ctx.size = inputs[0].shape


def _sum_to_size_backward(ctx, d_sum):  # a second derivative: the sum's adjoint is a broadcast
    return d_sum.expand(ctx.size), None


sum_to_size.register_autograd(_sum_to_size_backward, setup_context=_sum_to_size_setup)


class _Expand(torch.autograd.Function):
    """``x.expand(size)``, whose gradient is ``anatomy::sum_to_size``."""

    @staticmethod
    def forward(x: Tensor, size: Sequence) -> Tensor:
        return x.expand(size)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.size = inputs[0].shape

    @staticmethod
    def backward(ctx, grad: Tensor):
        return sum_to_size(grad, list(ctx.size)), None


def _traced_with_grad(x: Tensor) -> bool:
    return torch.compiler.is_compiling() and torch.is_grad_enabled() and x.requires_grad


def expand_to(x: Tensor, size: Sequence) -> Tensor:
    """``x.expand(size)``, whose gradient is summed by the opaque op when traced."""
    return _Expand.apply(x, size) if _traced_with_grad(x) else x.expand(size)


def expand_over(x: Tensor, like: Tensor, dims: tuple[tuple[int, int], ...]) -> Tensor:
    """`x`, size 1 along each dim i of `dims`' pairs (i, j), expanded to `like.size(j)` there
    when traced for a gradient; else `x` itself (eager code broadcasts as usual)."""
    if not _traced_with_grad(x):
        return x
    size = list(x.shape)
    for i, j in dims:
        size[i] = like.shape[j]
    return _Expand.apply(x, size)


def expand_operands(spec: str, operands: Sequence[Tensor],
                    expand: tuple[tuple[int, str], ...]) -> tuple[str, list[Tensor]]:
    """An Einstein product with operands expanded when traced for a gradient: each
    (i, term) of `expand` makes operand i carry the axes of `term` (its own and some of the
    other operands', in that order), their sizes read off the operands that have them.
    Returns the new spec and operands (the product's value is unchanged); eager code gets
    them back as they were."""
    if not any(_traced_with_grad(operands[i]) for i, _ in expand):
        return spec, list(operands)
    inputs, output = spec.split("->")
    terms = tuple(inputs.split(","))
    sizes = {c: n for term, x in zip(terms, operands) for c, n in zip(term, x.shape)
             if not (isinstance(n, int) and n == 1)}
    targets = dict(expand)
    new_terms, new_operands = [], []
    for i, (term, x) in enumerate(zip(terms, operands)):
        if i not in targets:
            new_terms.append(term)
            new_operands.append(x)
            continue
        target = targets[i]
        aligned = x.permute([term.index(c) for c in target if c in term])
        for j, c in enumerate(target):
            if c not in term:
                aligned = aligned.unsqueeze(j)
        new_terms.append(target)
        new_operands.append(_Expand.apply(aligned, [sizes.get(c, 1) for c in target]))
    return ",".join(new_terms) + "->" + output, new_operands
