"""Shape and dtype checks shared by every delta-rule form.

Every public entry point calls :func:`check_delta_rule_inputs` so that all forms reject the same
inputs with the same messages (the tensor, the axis and the expected size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeltaRuleDims:
    """Sizes of one delta-rule call: batch, time, heads, key size, value size, and the gate's
    kind: "none" (DeltaNet), "scalar" (Gated DeltaNet) or "channel" (KDA)."""

    B: int
    T: int
    H: int
    N: int
    P: int
    gate: str


def _expect(name: str, tensor: torch.Tensor, axis: str, dim: int, size: int) -> None:
    if tensor.shape[dim] != size:
        raise ValueError(
            f"{name}: expected axis {axis} (dim {dim}) of size {size} but got {tensor.shape[dim]} "
            f"(shape {tuple(tensor.shape)})"
        )


def _expect_tensor(name: str, tensor: object, ranks: tuple[int, ...]) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() not in ranks:
        wanted = " or ".join(str(r) for r in ranks)
        raise ValueError(
            f"{name}: expected {wanted} dims but got {tensor.dim()} (shape {tuple(tensor.shape)})"
        )
    if not tensor.is_floating_point():
        raise ValueError(f"{name}: expected a floating dtype, got {tensor.dtype}")


def check_delta_rule_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_a: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> DeltaRuleDims:
    """Validate q, k [B,T,H,N], v [B,T,H,P], beta [B,T,H], log_a None / [B,T,H] / [B,T,H,N],
    initial_state [B,H,N,P].

    Raises ValueError naming the tensor, the axis and the expected size (TypeError for a
    non-tensor).
    """
    for name, tensor, ranks in (("q", q, (4,)), ("k", k, (4,)), ("v", v, (4,)),
                                ("beta", beta, (3,))):
        _expect_tensor(name, tensor, ranks)
    B, T, H, N = q.shape
    P = v.shape[3]
    for axis, dim, size in (("B", 0, B), ("T", 1, T), ("H", 2, H), ("N", 3, N)):
        _expect("k", k, axis, dim, size)
    for axis, dim, size in (("B", 0, B), ("T", 1, T), ("H", 2, H)):
        _expect("v", v, axis, dim, size)
        _expect("beta", beta, axis, dim, size)
    if T == 0:
        raise ValueError("q: expected axis T (dim 1) of size >= 1 but got 0")
    gate = "none"
    if log_a is not None:
        _expect_tensor("log_a", log_a, (3, 4))
        for axis, dim, size in (("B", 0, B), ("T", 1, T), ("H", 2, H)):
            _expect("log_a", log_a, axis, dim, size)
        gate = "scalar"
        if log_a.dim() == 4:
            _expect("log_a", log_a, "N", 3, N)
            gate = "channel"
    if initial_state is not None:
        if initial_state.dim() != 4:
            raise ValueError(
                f"initial_state: expected 4 dims [B, H, N, P] but got shape "
                f"{tuple(initial_state.shape)}"
            )
        for axis, dim, size in (("B", 0, B), ("H", 1, H), ("N", 2, N), ("P", 3, P)):
            _expect("initial_state", initial_state, axis, dim, size)
    return DeltaRuleDims(B=B, T=T, H=H, N=N, P=P, gate=gate)


def gate_per_channel(log_a: torch.Tensor | None) -> torch.Tensor | None:
    """log_a as [B, T, H, N] (KDA) or [B, T, H, 1] (Gated DeltaNet, broadcast over N)."""
    if log_a is None or log_a.dim() == 4:
        return log_a
    return log_a[..., None]
