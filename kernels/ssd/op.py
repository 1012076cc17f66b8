"""Chunked SSD as torch custom ops, for graphs: torch.compile, torch.export, fake tensors and
the meta device see one opaque op, ``anatomy::ssd_chunked``, with a fake (shape-only)
implementation, instead of tracing into the kernels (data-dependent choices, ``out=``
arguments, Python loops over chunks, a C++ extension).

``anatomy::ssd_chunked(q, k, v, log_a, initial_state, scale, chunk_size, backend)``
returns (y [B, T, H, P] in v's dtype, final_state [B, H, N, P] in the accumulation dtype);
its gradient is ``anatomy::ssd_chunked_backward``, which runs the backend's forward again
(saving what its backward needs) and then its hand-written backward. So a compiled or
exported training step computes the SSD forward twice; eager code does not use these ops
(``ssd`` calls the kernels' autograd.Functions directly) and keeps one forward.

The ops run the kernels eagerly, where the backend (``auto``: the C++ kernel for CPU
tensors, Triton for CUDA ones, see ``auto_backend``) and the decay path are chosen from the
actual tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .chunk import _SSDChunked, chunked_arguments
from .cpu_chunk import _SSDCpu
from .validate import accumulate_dtype, check_ssd_inputs

OP_BACKENDS = ("auto", "torch", "cpu", "triton")


class _Context:
    """Stands in for autograd's ctx when a kernel's forward and backward are called as
    plain functions (inside an op, autograd does not record)."""

    def __init__(self, needs_grad: bool) -> None:
        self.needs_input_grad = (needs_grad,) * 10

    def save_for_backward(self, *tensors) -> None:
        self.saved_tensors = tensors


def _function(q, k, v, log_a, initial_state, scale, chunk_size, backend):
    """The backend's autograd.Function and the arguments of its forward after ctx."""
    from . import auto_backend
    if backend == "auto":
        backend = auto_backend(q, k, v, log_a, initial_state)
    if backend == "cpu":
        check_ssd_inputs(q, k, v, log_a, initial_state)
        return _SSDCpu, (q, k, v, log_a, initial_state, scale, chunk_size)
    if backend == "triton":
        from .triton_chunk import _SSDChunkedTriton
        dims = check_ssd_inputs(q, k, v, log_a, initial_state)
        return _SSDChunkedTriton, (q, k, v, log_a, initial_state, scale, chunk_size, dims)
    return _SSDChunked, chunked_arguments(q, k, v, log_a, initial_state, scale, chunk_size)


@torch.library.custom_op("anatomy::ssd_chunked", mutates_args=())
def ssd_chunked_op(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor,
                   initial_state: Tensor | None, scale: float, chunk_size: int,
                   backend: str) -> tuple[Tensor, Tensor]:
    fn, args = _function(q, k, v, log_a, initial_state, scale, chunk_size, backend)
    y, final = fn.forward(_Context(needs_grad=False), *args)
    return y.contiguous(), final.to(_final_dtype(q, k, v, log_a, initial_state)).contiguous()


def _final_dtype(*tensors) -> torch.dtype:
    """float64 when an input is float64 (the PyTorch path keeps it), else float32."""
    return accumulate_dtype(*tensors)


@ssd_chunked_op.register_fake
def _(q, k, v, log_a, initial_state, scale, chunk_size, backend):
    B, T, _, N = q.shape
    H, P = v.shape[2], v.shape[3]
    dtype = _final_dtype(q, k, v, log_a, initial_state)
    return v.new_empty(B, T, H, P), v.new_empty(B, H, N, P, dtype=dtype)


@torch.library.custom_op("anatomy::ssd_chunked_backward", mutates_args=())
def ssd_chunked_backward_op(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor,
                            initial_state: Tensor | None, dy: Tensor, d_final: Tensor,
                            scale: float, chunk_size: int, backend: str) -> list[Tensor]:
    fn, args = _function(q, k, v, log_a, initial_state, scale, chunk_size, backend)
    ctx = _Context(needs_grad=True)
    fn.forward(ctx, *args)
    dq, dk, dv, d_log_a, d_s0 = fn.backward(ctx, dy, d_final)[:5]
    grads = [g.to(x.dtype).contiguous() for g, x in zip((dq, dk, dv, d_log_a), (q, k, v, log_a))]
    grads.append(q.new_empty(0) if initial_state is None else
                 d_s0.to(initial_state.dtype).contiguous())
    return grads


@ssd_chunked_backward_op.register_fake
def _(q, k, v, log_a, initial_state, dy, d_final, scale, chunk_size, backend):
    grads = [torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v, log_a)]
    grads.append(q.new_empty(0) if initial_state is None else
                 torch.empty_like(initial_state, memory_format=torch.contiguous_format))
    return grads


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, log_a, initial_state, scale, chunk_size, backend = inputs
    ctx.save_for_backward(q, k, v, log_a, initial_state)
    ctx.args = (scale, chunk_size, backend)


def _backward(ctx, dy, d_final):
    q, k, v, log_a, initial_state = ctx.saved_tensors
    dq, dk, dv, d_log_a, d_s0 = ssd_chunked_backward_op(q, k, v, log_a, initial_state, dy,
                                                         d_final, *ctx.args)
    return dq, dk, dv, d_log_a, None if initial_state is None else d_s0, None, None, None


ssd_chunked_op.register_autograd(_backward, setup_context=_setup_context)


def tracing(*tensors: Tensor | None) -> bool:
    """True when the kernels are being traced rather than run: under torch.compile or
    torch.export, or on fake or meta tensors (then ``ssd`` calls the op)."""
    from torch._subclasses.fake_tensor import FakeTensor
    present = [t for t in tensors if t is not None]
    return torch.compiler.is_compiling() or any(
        isinstance(t, FakeTensor) or t.device.type == "meta" for t in present)
