"""The memory guard: what compiling and running an anatomy will hold, estimated before any
tensor is allocated, and a refusal (AnatError) when that is past the limit.

The limit is the memory available now (`MemAvailable` of /proc/meminfo), or the
`ANATOMY_MEMORY_LIMIT` environment variable, or the caller's own (`anatomy compile
--memory-limit`), written as bytes or with a unit: `512M`, `8G`, `1.5T`.

The estimates are linear in the program's size: each distinct (callee, dims) is sized once.
"""

from __future__ import annotations

import os
import re
from math import prod

from anatomy.errors import AnatError
from anatomy.shapes import Shapes

ENV = "ANATOMY_MEMORY_LIMIT"
# a compiled module's own Python objects (its fx graph and generated code): about 20 KB
# measured for a small composite, rounded up
BYTES_PER_MODULE = 64 * 1024
# in the chunked forms a wire over two sequence axes is held one chunk of keys at a time
CHUNK = 64
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """`8G` -> 8 * 2**30; a plain number is bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if m is None or float(m.group(1)) <= 0:
        raise AnatError(f"bad memory size `{text}`",
                        hint="a positive number of bytes, or with a unit: 512M, 8G, 1.5T")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def available() -> int:
    """The memory this machine can give now, in bytes."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63  # unknown: no limit


def limit(override: int | str | None = None) -> tuple[int, str]:
    """The limit in bytes and where it came from."""
    if override is not None:
        return (override if isinstance(override, int) else parse_size(override)), "given"
    if os.environ.get(ENV):
        return parse_size(os.environ[ENV]), ENV
    return available(), "memory available"


def module_bytes(shapes: Shapes, dtype_bytes: int = 4) -> int:
    """Parameters (fp32) and the modules that hold them, composites included."""
    params = shapes.param_count() or 0
    return params * dtype_bytes + (shapes.expanded_calls() + 1) * BYTES_PER_MODULE


def activation_bytes(shapes: Shapes, batch: int, seq: int, form: str = "auto",
                     dtype_bytes: int = 4) -> int:
    """Every wire of one forward pass held at once (an upper bound on its peak), sequence
    axes at `seq`; outside the parallel form a wire over two sequence axes counts one chunk
    of keys per query."""
    memo: dict[int, int] = {}

    def wires(s: Shapes) -> int:
        if id(s) in memo:
            return memo[id(s)]
        total = 0
        for w in s.diagram.wires.values():
            sizes = [s.size(a) for a in w.axes]
            free = sum(n is None for n in sizes)
            n = prod(x if x is not None else seq for x in sizes)
            if free > 1 and form != "parallel":
                n = n // seq * min(seq, CHUNK)
            total += n * (1 if w.role == "param" else batch)
        memo[id(s)] = total + sum(wires(c) for c in s.callees.values())
        return memo[id(s)]
    return wires(shapes) * dtype_bytes


def guard(what: str, need: int, override: int | str | None = None) -> None:
    """Refuse (AnatError) when `need` bytes are past the limit."""
    cap, source = limit(override)
    if need > cap:
        raise AnatError(f"{what} needs about {_human(need)}, more than the {_human(cap)} "
                        f"limit ({source})",
                        hint=f"use smaller dims (--dims), or raise the limit with "
                             f"--memory-limit or {ENV}=SIZE (e.g. 64G)")


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} PB"
