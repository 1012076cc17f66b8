"""Chunked GLA as torch custom ops, for graphs: torch.compile, torch.export, fake tensors and
the meta device see one opaque op, ``anatomy::gla_chunked``, with a fake (shape-only)
implementation, instead of tracing into the kernels (the sub-block size read off the decays
with ``.item()``, Python loops over chunks, a C++ extension, Triton).

``anatomy::gla_chunked(q, k, v, log_alpha, initial_state, bonus, scale, chunk_size, backend)``
returns (y [B, T, H, P] in v's dtype, final_state [B, H, N, P] in the accumulation dtype);
its gradient is ``anatomy::gla_chunked_backward``, which runs the backend's forward again
(saving what its backward needs) and then its hand-written backward, as ``anatomy::ssd_chunked``
does (kernels/ssd/op.py). Eager code does not use these ops: ``gla`` calls the kernels'
autograd.Functions directly.

The ops run the kernels eagerly, where the backend (``auto``: see ``auto_backend``) is chosen
from the actual tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ssd.op import _Context
from .chunk import _GLAChunked
from .cpu_chunk import _GLACpu
from .validate import accumulate_dtype, check_gla_inputs

OP_BACKENDS = ("auto", "torch", "cpu", "triton")


def _function(q, k, v, log_alpha, initial_state, bonus, scale, chunk_size, backend):
    """The backend's autograd.Function and the arguments of its forward after ctx."""
    from . import auto_backend
    if backend == "auto":
        backend = auto_backend(q, k, v, log_alpha, initial_state, bonus)
    dims = check_gla_inputs(q, k, v, log_alpha, initial_state, bonus)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1 but got {chunk_size}")
    tensors = (q, k, v, log_alpha, initial_state, bonus, scale, chunk_size)
    if backend == "cpu":
        return _GLACpu, tensors
    if backend == "triton":
        from .triton_chunk import SB, _GLAChunkedTriton
        if chunk_size < SB or chunk_size & (chunk_size - 1):
            raise ValueError(f"chunk_size: expected a power of two >= {SB} but got {chunk_size}")
        return _GLAChunkedTriton, (*tensors, dims)
    return _GLAChunked, (*tensors, dims)


@torch.library.custom_op("anatomy::gla_chunked", mutates_args=())
def gla_chunked_op(q: Tensor, k: Tensor, v: Tensor, log_alpha: Tensor,
                   initial_state: Tensor | None, bonus: Tensor | None, scale: float,
                   chunk_size: int, backend: str) -> tuple[Tensor, Tensor]:
    fn, args = _function(q, k, v, log_alpha, initial_state, bonus, scale, chunk_size, backend)
    y, final = fn.forward(_Context(needs_grad=False), *args)
    dtype = accumulate_dtype(q, k, v, log_alpha, initial_state, bonus)
    return y.contiguous(), final.to(dtype).contiguous()


@gla_chunked_op.register_fake
def _(q, k, v, log_alpha, initial_state, bonus, scale, chunk_size, backend):
    B, T, _, N = q.shape
    H, P = v.shape[2], v.shape[3]
    dtype = accumulate_dtype(q, k, v, log_alpha, initial_state, bonus)
    return v.new_empty(B, T, H, P), v.new_empty(B, H, N, P, dtype=dtype)


@torch.library.custom_op("anatomy::gla_chunked_backward", mutates_args=())
def gla_chunked_backward_op(q: Tensor, k: Tensor, v: Tensor, log_alpha: Tensor,
                            initial_state: Tensor | None, bonus: Tensor | None, dy: Tensor,
                            d_final: Tensor, scale: float, chunk_size: int,
                            backend: str) -> list[Tensor]:
    fn, args = _function(q, k, v, log_alpha, initial_state, bonus, scale, chunk_size, backend)
    ctx = _Context(needs_grad=True)
    fn.forward(ctx, *args)
    grads = fn.backward(ctx, dy, d_final)[:6]
    inputs = (q, k, v, log_alpha, initial_state, bonus)  # an empty tensor stands for None
    return [q.new_empty(0) if x is None else g.to(x.dtype).contiguous()
            for g, x in zip(grads, inputs)]


@gla_chunked_backward_op.register_fake
def _(q, k, v, log_alpha, initial_state, bonus, dy, d_final, scale, chunk_size, backend):
    return [q.new_empty(0) if x is None else
            torch.empty_like(x, memory_format=torch.contiguous_format)
            for x in (q, k, v, log_alpha, initial_state, bonus)]


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, log_alpha, initial_state, bonus, scale, chunk_size, backend = inputs
    ctx.save_for_backward(q, k, v, log_alpha, initial_state, bonus)
    ctx.args = (scale, chunk_size, backend)


def _backward(ctx, dy, d_final):
    q, k, v, log_alpha, initial_state, bonus = ctx.saved_tensors
    grads = gla_chunked_backward_op(q, k, v, log_alpha, initial_state, bonus, dy, d_final,
                                    *ctx.args)
    grads = [None if x is None else g
             for g, x in zip(grads, (q, k, v, log_alpha, initial_state, bonus))]
    return (*grads, None, None, None)


gla_chunked_op.register_autograd(_backward, setup_context=_setup_context)
