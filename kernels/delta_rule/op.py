"""The delta rule as torch custom ops, for graphs: torch.compile, torch.export, fake tensors and
the meta device see one opaque op, ``anatomy::delta_rule``, with a fake (shape-only)
implementation, instead of tracing into the kernels (a Python loop over T in the recurrence,
over chunks in the chunked forms, a C++ extension, Triton): a loop over T would fix T in an
exported graph.

``anatomy::delta_rule(q, k, v, beta, log_a, initial_state, scale, chunk_size, backend)``
returns (o [B, T, H, P] in v's dtype, final_state [B, H, N, P] in the accumulation dtype).
``backend`` is one of the chunked backends (``auto``: see ``auto_backend``) or
``recurrent`` (the defining recurrence, the parallel and step forms' choice). Its gradient
is ``anatomy::delta_rule_backward``: for a chunked backend it runs the backend's forward again
(saving what its backward needs) and then its hand-written backward, as
``anatomy::ssd_chunked`` does (kernels/ssd/op.py); a backend without one (the recurrence) is
differentiated by ``torch.func.vjp``. Eager code does not use these ops: ``delta_rule`` calls the
kernels directly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ssd.op import _Context
from ..ssd.validate import accumulate_dtype
from .chunk import _DeltaRuleChunked
from .cpu_chunk import _DeltaRuleCpu
from .recurrent import delta_rule_recurrent
from .validate import check_delta_rule_inputs

OP_BACKENDS = ("auto", "torch", "cpu", "triton", "recurrent")


def _function(q, k, v, beta, log_a, initial_state, scale, chunk_size, backend):
    """The backend's autograd.Function with a hand-written backward and the arguments of its
    forward after ctx."""
    from . import auto_backend
    if backend == "auto":
        backend = auto_backend(q, k, v, beta, log_a, initial_state)
    dims = check_delta_rule_inputs(q, k, v, beta, log_a, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1 but got {chunk_size}")
    tensors = (q, k, v, beta, log_a, initial_state, scale, chunk_size)
    if backend == "cpu":
        return _DeltaRuleCpu, tensors
    if backend == "triton":
        from .triton_chunk import SB, _DeltaRuleTriton
        if chunk_size < SB or chunk_size & (chunk_size - 1):
            raise ValueError(f"chunk_size: expected a power of two >= {SB} but got {chunk_size}")
        return _DeltaRuleTriton, (*tensors, dims)
    return _DeltaRuleChunked, tensors


def _recurrence(q, k, v, beta, log_a, initial_state, scale):
    """(o, final_state) by the recurrence (autograd differentiates it)."""
    return delta_rule_recurrent(q, k, v, beta, log_a=log_a, scale=scale,
                                initial_state=initial_state, output_final_state=True)


@torch.library.custom_op("anatomy::delta_rule", mutates_args=())
def delta_rule_op(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_a: Tensor | None,
                  initial_state: Tensor | None, scale: float, chunk_size: int,
                  backend: str) -> tuple[Tensor, Tensor]:
    if backend == "recurrent":
        o, final = _recurrence(q, k, v, beta, log_a, initial_state, scale)
    else:
        fn, args = _function(q, k, v, beta, log_a, initial_state, scale, chunk_size, backend)
        o, final = fn.forward(_Context(needs_grad=False), *args)
    dtype = accumulate_dtype(q, k, v, beta, log_a, initial_state)
    return o.contiguous(), final.to(dtype).contiguous()


@delta_rule_op.register_fake
def _(q, k, v, beta, log_a, initial_state, scale, chunk_size, backend):
    B, T, H, N = q.shape
    dtype = accumulate_dtype(q, k, v, beta, log_a, initial_state)
    return v.new_empty(B, T, H, v.shape[3]), v.new_empty(B, H, N, v.shape[3], dtype=dtype)


@torch.library.custom_op("anatomy::delta_rule_backward", mutates_args=())
def delta_rule_backward_op(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_a: Tensor | None,
                           initial_state: Tensor | None, d_o: Tensor, d_final: Tensor,
                           scale: float, chunk_size: int, backend: str) -> list[Tensor]:
    inputs = (q, k, v, beta, log_a, initial_state)
    if backend == "recurrent":  # autograd is off inside an op; torch.func.vjp still works
        present = [i for i, x in enumerate(inputs) if x is not None]

        def forward(*xs):
            full = list(inputs)
            for i, x in zip(present, xs):
                full[i] = x
            return _recurrence(*full, scale)
        _, vjp = torch.func.vjp(forward, *(inputs[i] for i in present))
        found = dict(zip(present, vjp((d_o, d_final))))
        grads = [found.get(i) for i in range(len(inputs))]
    else:
        fn, args = _function(*inputs, scale, chunk_size, backend)
        ctx = _Context(needs_grad=True)
        fn.forward(ctx, *args)
        grads = fn.backward(ctx, d_o, d_final)[:6]
    # an empty tensor stands for the gradient of an absent (None) input
    return [q.new_empty(0) if x is None else g.to(x.dtype).contiguous()
            for g, x in zip(grads, inputs)]


@delta_rule_backward_op.register_fake
def _(q, k, v, beta, log_a, initial_state, d_o, d_final, scale, chunk_size, backend):
    return [q.new_empty(0) if x is None else
            torch.empty_like(x, memory_format=torch.contiguous_format)
            for x in (q, k, v, beta, log_a, initial_state)]


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, beta, log_a, initial_state, scale, chunk_size, backend = inputs
    ctx.save_for_backward(q, k, v, beta, log_a, initial_state)
    ctx.args = (scale, chunk_size, backend)


def _backward(ctx, d_o, d_final):
    inputs = ctx.saved_tensors
    grads = delta_rule_backward_op(*inputs, d_o, d_final, *ctx.args)
    return (*(None if x is None else g for g, x in zip(grads, inputs)), None, None, None)


delta_rule_op.register_autograd(_backward, setup_context=_setup_context)
