"""Shape and dtype checks shared by every GLA form.

Every public entry point calls :func:`check_gla_inputs` so that all forms reject the same inputs
with the same messages (the tensor, the axis and the expected size).
"""

from __future__ import annotations

import torch

from ..ssd.validate import SSDDims as GLADims
from ..ssd.validate import accumulate_dtype

__all__ = ["GLADims", "accumulate_dtype", "check_gla_inputs"]


def _expect(name: str, tensor: torch.Tensor, axis: str, dim: int, size: int) -> None:
    if tensor.shape[dim] != size:
        raise ValueError(
            f"{name}: expected axis {axis} (dim {dim}) of size {size} but got {tensor.shape[dim]} "
            f"(shape {tuple(tensor.shape)})"
        )


def _expect_tensor(name: str, tensor: object, rank: int) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != rank:
        raise ValueError(
            f"{name}: expected {rank} dims but got {tensor.dim()} (shape {tuple(tensor.shape)})"
        )
    if not tensor.is_floating_point():
        raise ValueError(f"{name}: expected a floating dtype, got {tensor.dtype}")


def check_gla_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_alpha: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    bonus: torch.Tensor | None = None,
) -> GLADims:
    """Validate q, k [B,T,G,N], v [B,T,H,P], log_alpha [B,T,H,N], initial_state [B,H,N,P],
    bonus [H,N] (G divides H).

    Raises ValueError naming the tensor, the axis and the expected size (TypeError for a
    non-tensor). The values of log_alpha are not inspected (that would synchronise a GPU).
    """
    for name, tensor in (("q", q), ("k", k), ("v", v), ("log_alpha", log_alpha)):
        _expect_tensor(name, tensor, 4)
    B, T, G, N = q.shape
    H, P = v.shape[2], v.shape[3]
    for axis, dim, size in (("B", 0, B), ("T", 1, T), ("G", 2, G), ("N", 3, N)):
        _expect("k", k, axis, dim, size)
    _expect("v", v, "B", 0, B)
    _expect("v", v, "T", 1, T)
    if G == 0 or H % G != 0:
        raise ValueError(f"v: expected H divisible by G={G} but H={H}")
    for axis, dim, size in (("B", 0, B), ("T", 1, T), ("H", 2, H), ("N", 3, N)):
        _expect("log_alpha", log_alpha, axis, dim, size)
    if T == 0:
        raise ValueError("q: expected axis T (dim 1) of size >= 1 but got 0")
    if initial_state is not None:
        _expect_tensor("initial_state", initial_state, 4)
        for axis, dim, size in (("B", 0, B), ("H", 1, H), ("N", 2, N), ("P", 3, P)):
            _expect("initial_state", initial_state, axis, dim, size)
    if bonus is not None:
        _expect_tensor("bonus", bonus, 2)
        _expect("bonus", bonus, "H", 0, H)
        _expect("bonus", bonus, "N", 1, N)
    return GLADims(B=B, T=T, G=G, H=H, N=N, P=P)
