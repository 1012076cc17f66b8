"""Building the C++ CPU kernels (``kernels/*/cpu_chunk.cpp``) on first use.

Each kernel is compiled by ``torch.utils.cpp_extension`` into a folder of its own per source,
flags, CPU and torch version, under ``~/.cache/anatomy/build`` (``ANATOMY_BUILD_DIR`` moves
it). ``ANATOMY_CPU_KERNEL=0`` turns every kernel off; a kernel that cannot be built (no C++
compiler, a torch without an exported BLAS) warns once and its caller falls back to the
PyTorch chunked path.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

# -march=native: the elementwise loops use the machine's vector width (BLAS picks its own); on
# x86 GCC otherwise keeps to 256-bit vectors even where 512-bit ones exist (they were ~4% slower
# here, measured)
CFLAGS = ("-O3", "-march=native", "-fopenmp")
if platform.machine().lower() in ("x86_64", "amd64"):
    CFLAGS += ("-mprefer-vector-width=512",)
LDFLAGS = ("-fopenmp",)


def cpu_signature() -> str:
    """The CPU's model and feature flags (a build for one CPU may not run on another)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() + platform.processor()
    keep = [line for line in info.splitlines() if line.startswith(("model name", "flags"))]
    return platform.machine() + "\n".join(sorted(set(keep)))


# What every kernel's source includes (``#include "../cpu_common.h"``): part of each build's key.
SHARED_HEADER = Path(__file__).with_name("cpu_common.h")


def build_directory(kernel: str, source: Path, cflags: tuple[str, ...]) -> Path:
    """Where a kernel's compiled extension lives: one folder per source (with the shared
    header), flags, CPU and torch."""
    root = os.environ.get("ANATOMY_BUILD_DIR") or Path.home() / ".cache" / "anatomy" / "build"
    key = (source.read_bytes() + SHARED_HEADER.read_bytes() + repr((cflags, LDFLAGS)).encode()
           + cpu_signature().encode())
    digest = hashlib.sha256(key).hexdigest()[:12]
    return Path(root) / f"{kernel}_cpu-torch{torch.__version__}-{digest}"


def put_ninja_on_path() -> None:
    """torch's extension builder runs ``ninja`` from PATH; the pip package's binary is not on
    PATH when the virtual environment's python is run without activating it."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


STALE_LOCK_SECONDS = 600  # a build takes ~20 s (minutes on a loaded machine)


def clear_stale_lock(build: Path) -> None:
    """torch's extension builder holds a `lock` file while it compiles and makes every other
    process wait, forever, while the file exists; a build that was killed leaves it behind.
    A lock older than any build takes is removed (with a note), so later runs build again
    instead of hanging."""
    lock = build / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return
    if age > STALE_LOCK_SECONDS:
        print(f"anatomy: removing a stale build lock ({age:.0f} s old, from a build that was "
              f"stopped): {lock}", file=sys.stderr, flush=True)
        lock.unlink(missing_ok=True)


def load_extension(kernel: str, title: str, source: Path, cflags: tuple[str, ...]):
    """The compiled module of one kernel (`kernel`: its short name, e.g. "ssd"; `title`: how
    messages name it), or None (with a warning saying why) when it cannot be built.

    The flags go to torch as fresh lists: its ``load`` appends its own link flags to the list
    it is given, which changed the build key of every kernel loaded after the first in a
    process (a second build, ~20 s, of a kernel already built)."""
    if os.environ.get("ANATOMY_CPU_KERNEL", "1") == "0":
        return None
    from torch.utils.cpp_extension import load

    put_ninja_on_path()
    build = build_directory(kernel, source, cflags)
    build.mkdir(parents=True, exist_ok=True)
    clear_stale_lock(build)
    if not any(build.glob("*.so")):
        print(f"anatomy: compiling the CPU {title} kernel into {build} (first use only, ~20 s)",
              file=sys.stderr, flush=True)
    try:
        return load(name=f"anatomy_{kernel}_cpu", sources=[str(source)],
                    build_directory=str(build), extra_cflags=list(cflags),
                    extra_ldflags=list(LDFLAGS),
                    verbose=False)
    # a missing compiler (RuntimeError, OSError, CalledProcessError), or a torch without an
    # exported sgemm_ (ImportError: undefined symbol)
    except (RuntimeError, ImportError, OSError, subprocess.CalledProcessError) as error:
        warnings.warn(f"anatomy: the CPU {title} kernel could not be built ({error}); "
                      "falling back to the PyTorch chunked path", stacklevel=4)
        return None
