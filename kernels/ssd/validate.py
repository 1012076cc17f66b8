"""Shape and dtype checks shared by every SSD form.

Every public entry point calls :func:`check_ssd_inputs` so that all forms reject the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SSDDims:
    """Sizes of one SSD call: batch, time, key groups, heads, state size, head size."""

    B: int
    T: int
    G: int
    H: int
    N: int
    P: int

    @property
    def heads_per_group(self) -> int:
        return self.H // self.G


def accumulate_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision accumulates in float32)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def _expect(name: str, tensor: torch.Tensor, axis: str, dim: int, size: int) -> None:
    if tensor.shape[dim] != size:
        raise ValueError(
            f"{name}: expected axis {axis} (dim {dim}) of size {size} but got {tensor.shape[dim]} "
            f"(shape {tuple(tensor.shape)})"
        )


def check_ssd_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_a: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> SSDDims:
    """Validate q, k [B,T,G,N], v [B,T,H,P], log_a [B,T,H], initial_state [B,H,N,P].

    Raises ValueError naming the tensor, the axis and the expected size (TypeError for a
    non-tensor).
    """
    for name, tensor, rank in (("q", q, 4), ("k", k, 4), ("v", v, 4), ("log_a", log_a, 3)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != rank:
            raise ValueError(
                f"{name}: expected {rank} dims but got {tensor.dim()} (shape {tuple(tensor.shape)})"
            )
        if not tensor.is_floating_point():
            raise ValueError(f"{name}: expected a floating dtype, got {tensor.dtype}")
    B, T, G, N = q.shape
    P, H = v.shape[3], v.shape[2]
    for axis, dim, size in (("B", 0, B), ("T", 1, T), ("G", 2, G), ("N", 3, N)):
        _expect("k", k, axis, dim, size)
    _expect("v", v, "B", 0, B)
    _expect("v", v, "T", 1, T)
    if G == 0 or H % G != 0:
        raise ValueError(f"v: expected H divisible by G={G} but H={H}")
    for axis, dim, size in (("B", 0, B), ("T", 1, T), ("H", 2, H)):
        _expect("log_a", log_a, axis, dim, size)
    if T == 0:
        raise ValueError("q: expected axis T (dim 1) of size >= 1 but got 0")
    if initial_state is not None:
        if initial_state.dim() != 4:
            raise ValueError(
                f"initial_state: expected 4 dims [B, H, N, P] but got shape "
                f"{tuple(initial_state.shape)}"
            )
        for axis, dim, size in (("B", 0, B), ("H", 1, H), ("N", 2, N), ("P", 3, P)):
            _expect("initial_state", initial_state, axis, dim, size)
    return SSDDims(B=B, T=T, G=G, H=H, N=N, P=P)
