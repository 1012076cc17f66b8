"""Where trials run: in this process, in local worker processes (the default), or on a Ray
cluster. Each executor runs `run_trial(spec)` and hands back results as they finish; the
search loop (anatomy.search.runner) does all the bookkeeping, so executors stay small.

Local workers are spawned (not forked: torch's thread pools do not survive a fork), run
with `threads` torch threads each so that workers do not oversubscribe the cores, and exit
when the process that started them dies (a killed search leaves no orphans behind).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from anatomy.errors import AnatError

from .train import TrialResult, TrialSpec, run_trial


def default_workers(threads: int = 1) -> int:
    """One worker per `threads` cores (at least one)."""
    return max(1, (os.cpu_count() or 1) // threads)


class Executor:
    """Runs trials; `capacity` is how many to keep in flight."""

    capacity: int = 1

    def submit(self, spec: TrialSpec) -> None:
        raise NotImplementedError

    def finished(self, timeout: float) -> Iterator[tuple[TrialSpec, TrialResult]]:
        """Trials that finished within `timeout` seconds (possibly none)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class InProcess(Executor):
    """Runs each trial here, at submission (for tests and debugging)."""

    def __init__(self):
        self.done: list[tuple[TrialSpec, TrialResult]] = []

    def submit(self, spec):
        self.done.append((spec, run_trial(spec)))

    def finished(self, timeout):
        done, self.done = self.done, []
        yield from done


class LocalProcesses(Executor):
    """A pool of spawned worker processes on this machine."""

    def __init__(self, workers: int, threads: int):
        import multiprocessing
        self.capacity = workers
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=(threads, os.getpid()))
        self.running: dict[Future, TrialSpec] = {}

    def submit(self, spec):
        self.running[self.pool.submit(run_trial, spec)] = spec

    def finished(self, timeout):
        if not self.running:
            return
        done, _ = wait(list(self.running), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            spec = self.running.pop(future)
            try:
                result = future.result()
            except Exception as e:  # noqa: BLE001 - the worker process died (e.g. out of memory)
                result = TrialResult("failed", error=f"worker died: {type(e).__name__}: {e}")
            yield spec, result

    def close(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


def _init_worker(threads: int, parent: int) -> None:
    import torch
    torch.set_num_threads(threads)

    def watch() -> None:  # exit with the search: a killed search leaves no workers behind
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


class RayCluster(Executor):
    """Trials as Ray tasks on an existing cluster (`address`), or on a local Ray instance
    when `address` is None. Ray is an optional extra: pip install 'anatomy[ray]'."""

    def __init__(self, address: str | None, threads: int):
        try:
            import ray
        except ImportError:
            raise AnatError("--executor ray needs Ray",
                            hint="pip install 'anatomy[ray]' (or pip install ray)") from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.capacity = max(1, cpus // threads)
        self.task = ray.remote(num_cpus=threads, max_retries=0)(_ray_trial)
        self.running: dict = {}

    def submit(self, spec):
        self.running[self.task.remote(spec)] = spec

    def finished(self, timeout):
        if not self.running:
            return
        ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=timeout)
        for ref in ready:
            spec = self.running.pop(ref)
            try:
                result = self.ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the Ray worker died
                result = TrialResult("failed", error=f"ray task died: {type(e).__name__}: {e}")
            yield spec, result

    def close(self):
        for ref in self.running:
            self.ray.cancel(ref, force=True)


def _ray_trial(spec: TrialSpec) -> TrialResult:
    import torch
    torch.set_num_threads(spec.threads)
    return run_trial(spec)


def make_executor(kind: str, workers: int | None, threads: int,
                  address: str | None = None) -> Executor:
    if kind == "ray":
        return RayCluster(address, threads)
    if kind != "local":
        raise AnatError(f"unknown executor `{kind}`", hint="use local or ray")
    if address:
        raise AnatError("--address is for --executor ray")
    workers = default_workers(threads) if workers is None else workers
    return InProcess() if workers == 0 else LocalProcesses(workers, threads)
