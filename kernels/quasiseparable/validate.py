"""Shape checks for the quasiseparable mixer: each direction is a valid SSD call, diag fits."""

from __future__ import annotations

import torch

from ..ssd.validate import check_ssd_inputs


def check_quasiseparable_inputs(
    q_fwd: torch.Tensor,
    k_fwd: torch.Tensor,
    q_bwd: torch.Tensor,
    k_bwd: torch.Tensor,
    v: torch.Tensor,
    log_a_fwd: torch.Tensor,
    log_a_bwd: torch.Tensor,
    diag: torch.Tensor,
) -> None:
    """Raise ValueError (naming tensor, axis, expected size) unless the shapes agree."""
    check_ssd_inputs(q_fwd, k_fwd, v, log_a_fwd)
    check_ssd_inputs(q_bwd, k_bwd, v, log_a_bwd)
    if q_bwd.shape != q_fwd.shape:
        raise ValueError(
            f"q_bwd: expected the shape of q_fwd {tuple(q_fwd.shape)} but got "
            f"{tuple(q_bwd.shape)}"
        )
    B, T, H = v.shape[:3]
    if diag.dim() == 1:
        if diag.shape[0] != H:
            raise ValueError(f"diag: expected axis H (dim 0) of size {H} but got {diag.shape[0]}")
    elif tuple(diag.shape) != (B, T, H):
        raise ValueError(f"diag: expected shape [H] or [B, T, H] = {(B, T, H)} but got "
                         f"{tuple(diag.shape)}")
