"""Attention-mechanism kernels: SSD (decayed linear attention) and Hydra quasiseparable mixers.

Organised per operation (naive reference, recurrent, PyTorch chunked, C++ chunked for CPUs,
Triton chunked for GPUs).
"""

from __future__ import annotations

from .quasiseparable import quasiseparable, quasiseparable_naive
from .ssd import (
    segment_sum,
    ssd,
    ssd_chunked,
    ssd_chunked_cpu,
    ssd_naive,
    ssd_recurrent,
    ssd_step,
)

__all__ = [
    "quasiseparable",
    "quasiseparable_naive",
    "segment_sum",
    "ssd",
    "ssd_chunked",
    "ssd_chunked_cpu",
    "ssd_naive",
    "ssd_recurrent",
    "ssd_step",
]
