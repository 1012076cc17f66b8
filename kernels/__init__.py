"""Attention-mechanism kernels: SSD (decayed linear attention), gated linear attention
(per-channel decay: GLA, RWKV-6), Hydra quasiseparable mixers and the delta rule (DeltaNet,
Gated DeltaNet, KDA).

Organised per operation (naive reference, recurrent, PyTorch chunked, C++ chunked for CPUs,
Triton chunked for GPUs).
"""

from __future__ import annotations

from .delta_rule import (
    delta_rule,
    delta_rule_chunked,
    delta_rule_naive,
    delta_rule_recurrent,
    delta_rule_step,
)
from .gla import gla, gla_chunked, gla_naive, gla_recurrent, gla_step
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
    "delta_rule",
    "delta_rule_chunked",
    "delta_rule_naive",
    "delta_rule_recurrent",
    "delta_rule_step",
    "gla",
    "gla_chunked",
    "gla_naive",
    "gla_recurrent",
    "gla_step",
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
