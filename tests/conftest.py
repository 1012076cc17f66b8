"""The test suite: Triton runs in its CPU interpreter when no GPU is present. The choice is
made here, before any test module imports triton (directly, or through a peer such as
fla-core), because triton reads TRITON_INTERPRET when it first decorates a kernel."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
