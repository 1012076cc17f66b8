"""Building the C++ CPU kernels on first use (kernels/cpu_build.py): build folders keyed by
what was built, and a build killed mid-way does not hang later ones."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from anatomy.kernels.cpu_build import STALE_LOCK_SECONDS, build_directory, clear_stale_lock
from anatomy.kernels.delta_rule import cpu_chunk as delta_rule_cpu
from anatomy.kernels.gla import cpu_chunk as gla_cpu
from anatomy.kernels.ssd import cpu_chunk as ssd_cpu


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


@pytest.mark.skipif(not all(m.cpu_kernel_available() for m in (ssd_cpu, gla_cpu, delta_rule_cpu)),
                    reason="a C++ CPU kernel did not build (see its warning)")
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
