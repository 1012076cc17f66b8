"""Packed sequences for the chunked kernels: one call per sequence of a packed batch.

`segmented(kernel, cu_seqlens, q, k, ...)` runs `kernel` (ssd, gla or delta_rule) on each
sequence of inputs packed along time in a batch of 1 (fla's `cu_seqlens`: offsets
[num_seqs + 1] from 0 to the packed length), each from a zero state, and concatenates the
outputs: the state resets at every boundary.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor

TIME_KWARGS = ("log_a",)  # keyword inputs laid out [B, T, ...] (delta_rule's gate)


def boundaries(cu_seqlens) -> list[int]:
    """The offsets as Python ints."""
    return [int(c) for c in (cu_seqlens.tolist() if isinstance(cu_seqlens, Tensor)
                             else cu_seqlens)]


def segmented(kernel, cu_seqlens, *args, **kwargs) -> Tensor:
    """`kernel(*args, **kwargs)` on each packed sequence alone (no initial state, no final
    state), the outputs concatenated along time. Positional inputs and `log_a` are
    [1, T, ...]."""
    if kwargs.get("initial_state") is not None or kwargs.get("output_final_state"):
        raise ValueError("segmented runs each sequence from a zero state and returns no state")
    cu = boundaries(cu_seqlens)
    outs = []
    for a, b in pairwise(cu):
        if b == a:
            continue
        part = [x[:, a:b] if isinstance(x, Tensor) else x for x in args]
        kw = {n: (v[:, a:b] if n in TIME_KWARGS and isinstance(v, Tensor) else v)
              for n, v in kwargs.items()}
        outs.append(kernel(*part, **kw))
    return torch.cat(outs, 1)


def ssd_packed(cu_seqlens, *args, **kwargs) -> Tensor:
    """`ssd` on each packed sequence alone (see `segmented`)."""
    from .ssd import ssd
    return segmented(ssd, cu_seqlens, *args, **kwargs)


def gla_packed(cu_seqlens, *args, **kwargs) -> Tensor:
    """`gla` on each packed sequence alone (see `segmented`)."""
    from .gla import gla
    return segmented(gla, cu_seqlens, *args, **kwargs)


def delta_rule_packed(cu_seqlens, *args, **kwargs) -> Tensor:
    """`delta_rule` on each packed sequence alone (see `segmented`)."""
    from .delta_rule import delta_rule
    return segmented(delta_rule, cu_seqlens, *args, **kwargs)
