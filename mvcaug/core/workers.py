"""Worker processes on this machine, for independent pieces of CPU work such as the train stage's cells.

A small CNN at batch 32 does not keep two CPU cores busy from one process: torch splits each operation across
its threads, and the operations are too small to split well. One single-threaded process per core, each
training its own cell, measured 1.35x the local runner's throughput on 2 cores (75 cells: 135 s against 183 s).
The processes are spawned (not forked: the stage's process already runs Prefect's threads) as the `with` block
starts, in the caller's thread, so they import while the caller looks for work; they read their data themselves
(the caller's function does, once per process), and die with the stage (a killed stage leaves no cell training
behind it). A block that gave them no work (a rerun that keeps every result) stops them at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["local_workers", "WorkerProcesses"]

T = TypeVar("T")

LOG_FORMAT = "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s"
"""A worker's log lines, in the form of the stage's own (Prefect's console format)."""


def local_workers(requested: int, gpus: int) -> int:
    """Processes the local runner works in: 1 (the stage's own) where a GPU is visible, whose work runs there one
    piece after another; else `requested`, 0 meaning one per CPU core this process may run on."""
    if gpus > 0:
        return 1
    return requested or len(os.sched_getaffinity(0))


def _start_worker(setup: Callable[[], None] | None) -> None:
    """A new worker: its `mvcaug` log lines go to stderr like the stage's (unless something it imported, such as
    Prefect's logging set-up, already sends them somewhere), then the caller's setup runs."""
    logger = logging.getLogger("mvcaug")
    if not logger.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    if setup is not None:
        setup()


def _ready() -> None:
    """A no-op, submitted once per worker as the block starts, so that each worker starts (and imports) then."""


class WorkerProcesses:
    """`count` spawned processes that run module-level functions (`run`, from any thread, blocking until the result
    comes back), from entering the `with` block to leaving it: then they finish their work, or are stopped at once
    if the block raised or gave them none. A worker that dies (killed, out of memory) fails the work it had and
    every piece still waiting (concurrent.futures' BrokenProcessPool), rather than leave its caller waiting."""

    def __init__(self, count: int, setup: Callable[[], None] | None = None):
        if count < 1:
            raise ValueError(f"need at least one worker process, got {count}")
        self.count, self.setup = count, setup
        self._executor: ProcessPoolExecutor | None = None
        self._used = False

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a worker process (fn and args pickled by reference and value); its exception is raised here,
        and CancelledError or BrokenProcessPool when the block ended (or a worker died) before it ran."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("WorkerProcesses.run outside its with block")
        self._used = True
        return executor.submit(fn, *args).result()

    def __enter__(self) -> WorkerProcesses:
        self._executor = ProcessPoolExecutor(self.count, multiprocessing.get_context("spawn"), _start_worker,
                                             (self.setup,))
        for _ in range(self.count):
            # started now, in the caller's thread: a setup that ties a worker's life to its parent's
            # (PR_SET_PDEATHSIG) ties it to the thread that started it
            self._executor.submit(_ready)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if kind is None and self._used:
            executor.shutdown(wait=True)
            return
        # an error, Ctrl-C, or no work: nothing to wait for. Queued work is cancelled; the workers are terminated
        # (concurrent.futures has no public call for it before Python 3.14), which fails the work they held
        processes = list(getattr(executor, "_processes", {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()
