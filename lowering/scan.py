"""The `scan` box's recurrence S_t = a_t S_{t-1} + u_t as a torch custom op, `anatomy::scan`.

A loop over time in Python specialises a traced graph to one sequence length (torch.export
with a dynamic T refuses it; torch.compile recompiles per T and unrolls the loop). As an op
it is one node of any length, with a fake implementation for fake and meta tensors. Its
gradient is the same recurrence run backwards in time (through the op again, so it is
differentiable twice):
    dS_t = dy_t + a_{t+1} dS_{t+1},   du_t = dS_t,   da_t = dS_t S_{t-1},
    d initial = a_0 dS_0.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.library.custom_op("anatomy::scan", mutates_args=())
def scan_op(u: Tensor, a: Tensor, dim: int, initial: Tensor | None) -> Tensor:
    """Every state S_t along `dim` (u and the decays a of one shape; S before the first step:
    `initial`, or zeros)."""
    u_t, a_t = u.movedim(dim, 0), a.movedim(dim, 0)
    out = torch.empty_like(u_t, memory_format=torch.contiguous_format)
    state = torch.zeros_like(u_t[0]) if initial is None else initial
    for i in range(u_t.shape[0]):
        state = a_t[i] * state + u_t[i]
        out[i] = state
    return out.movedim(0, dim).contiguous()


@scan_op.register_fake
def _(u, a, dim, initial):
    return torch.empty_like(u, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output) -> None:
    _, a, dim, initial = inputs
    ctx.dim, ctx.has_initial = dim, initial is not None
    ctx.save_for_backward(a, output, initial if initial is not None else a.new_empty(0))


def _backward(ctx, dy):
    a, y, initial = ctx.saved_tensors
    dim, n = ctx.dim, a.shape[ctx.dim]
    a_next = torch.cat([a.narrow(dim, 1, n - 1), torch.zeros_like(a.narrow(dim, 0, 1))], dim)
    d_state = scan_op(dy.flip(dim), a_next.flip(dim), dim, None).flip(dim)
    first = initial.unsqueeze(dim) if ctx.has_initial else torch.zeros_like(y.narrow(dim, 0, 1))
    previous = torch.cat([first.to(y.dtype), y.narrow(dim, 0, n - 1)], dim)
    d_initial = None
    if ctx.has_initial:
        d_initial = (a.narrow(dim, 0, 1) * d_state.narrow(dim, 0, 1)).squeeze(dim)
    return d_state, d_state * previous, None, d_initial


scan_op.register_autograd(_backward, setup_context=_setup_context)
