"""Building the C++ CPU kernels on first use (kernels/cpu_build.py): build folders keyed by
what was built, a build killed mid-way does not hang later ones, and the kernels leave the
caller's BLAS threading as they found it (kernels/cpu_common.h)."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

import pytest
import torch
from anatomy.kernels.cpu_build import STALE_LOCK_SECONDS, build_directory, clear_stale_lock
from anatomy.kernels.delta_rule import cpu_chunk as delta_rule_cpu
from anatomy.kernels.gla import cpu_chunk as gla_cpu
from anatomy.kernels.ssd import cpu_chunk as ssd_cpu

ALL_BUILT = all(m.cpu_kernel_available() for m in (ssd_cpu, gla_cpu, delta_rule_cpu))


def test_a_stale_build_lock_is_cleared_and_a_fresh_one_kept(tmp_path):
    """A build killed mid-way leaves torch's `lock` file, on which every later process would
    wait forever; one older than any build takes is removed, a fresh one is left alone."""
    lock = tmp_path / "lock"
    lock.touch()
    clear_stale_lock(tmp_path)
    assert lock.exists()
    old = time.time() - STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    clear_stale_lock(tmp_path)
    assert not lock.exists()


@pytest.mark.skipif(not ALL_BUILT, reason="a C++ CPU kernel did not build (see its warning)")
def test_each_kernel_loads_from_its_own_build_key_in_any_order():
    """torch's loader appends its link flags to the list it is given; were that our list, every
    kernel loaded after the first in a process would compute another build key and build
    itself again (~20 s) into a second folder. Loading all three, twice, in both orders leaves
    each key unchanged, and each key's folder holds the module that was loaded."""
    kernels = {"ssd": ssd_cpu, "gla": gla_cpu, "delta_rule": delta_rule_cpu}
    keys = {name: build_directory(name, m.SOURCE, m.CFLAGS) for name, m in kernels.items()}
    for order in (list(kernels), list(reversed(kernels))):
        for name in order:
            kernels[name]._extension.cache_clear()
            module = kernels[name]._extension()
            assert module is not None, name
            assert Path(module.__file__).parent == keys[name], name
            assert build_directory(name, kernels[name].SOURCE, kernels[name].CFLAGS) == keys[name]


def mkl_max_threads() -> int | None:
    """MKL's thread count for BLAS calls on this thread (None without MKL in torch)."""
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    return lib.mkl_get_max_threads() if hasattr(lib, "mkl_get_max_threads") else None


@pytest.mark.skipif(not ALL_BUILT, reason="a C++ CPU kernel did not build (see its warning)")
@pytest.mark.parametrize("heads", [1, 3])
def test_kernels_leave_the_callers_blas_threads_as_they_were(heads):
    """A single task runs on the caller's thread, outside any parallel region, with MKL's
    thread-local count set to 1 for its gemms; a count not restored would leave every later
    BLAS call of the caller on one thread. Three tasks run in a parallel region, where the
    count is left alone."""
    if mkl_max_threads() is None:
        pytest.skip("torch's BLAS is not MKL: the kernels leave its threads alone")
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        before = mkl_max_threads()
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 128, heads, 16, generator=g, requires_grad=True)
                   for _ in range(3))
        log_a = -torch.rand(1, 128, heads, generator=g)
        log_alpha = -torch.rand(1, 128, heads, 16, generator=g)
        beta = torch.rand(1, 128, heads, generator=g)
        outputs = [ssd_cpu.ssd_chunked_cpu(q, k, v, log_a),
                   gla_cpu.gla_chunked_cpu(q, k, v, log_alpha),
                   delta_rule_cpu.delta_rule_chunked_cpu(q, k, v, beta, log_a=log_a)]
        sum(o.sum() for o in outputs).backward()
        assert mkl_max_threads() == before == 2
    finally:
        torch.set_num_threads(saved)
