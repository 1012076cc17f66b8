"""The size guards inductor's CPU code sets on float32 sums (``need_use_acc_helper``: a sum
longer than 4096 terms takes a cascade accumulator, so its length is guarded and a longer T
on the other side of 4096 recompiles). Shared by tests/test_broadcast.py and
bench/citizen.py."""

from __future__ import annotations

import contextlib
import logging

import torch


class _SizeGuards(logging.Handler):
    def __init__(self):
        super().__init__()
        self.found: set[str] = set()

    def emit(self, record):
        for line in record.getMessage().splitlines():
            if "need_use_acc_helper" not in line:
                continue
            guard = line.split("LAMBDA_GUARD: ")[-1].split("  #")[0].strip()
            self.found.add(guard.replace("L['args'][0].size()[0]", "B")
                           .replace("L['args'][0].size()[1]", "T"))


@contextlib.contextmanager
def size_guards():
    """Yields the set that collects, while the block runs, each such guard dynamo records
    (B and T standing for the first input's first two sizes)."""
    handler = _SizeGuards()
    logger = logging.getLogger("torch._dynamo.guards")
    torch._logging.set_logs(guards=True)
    logger.addHandler(handler)
    try:
        yield handler.found
    finally:
        logger.removeHandler(handler)
        torch._logging.set_logs()
