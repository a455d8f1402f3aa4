"""Worker processes (mvcaug.core.workers): work runs in other processes, errors come back, and how many there are."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from mvcaug.core.workers import WorkerProcesses, local_workers
from mvcaug.judging.train import CPU_THREADS, cell_threads


def where_and_square(value: int) -> tuple[int, int]:
    return os.getpid(), value * value


def refuse(value: int) -> None:
    raise ValueError(f"no {value}")


def sleep_for(seconds: float) -> None:
    time.sleep(seconds)


def test_work_runs_in_the_worker_processes_and_comes_back_in_order():
    with WorkerProcesses(2) as pool:
        results = [pool.run(where_and_square, k) for k in range(4)]
    assert [square for _, square in results] == [0, 1, 4, 9]
    assert os.getpid() not in {pid for pid, _ in results}


def test_a_workers_error_is_raised_in_the_caller_and_the_workers_stop():
    pool = WorkerProcesses(1)
    with pytest.raises(ValueError, match="no 3"), pool:
        pool.run(refuse, 3)
    with pytest.raises(RuntimeError, match="outside its with block"):
        pool.run(where_and_square, 1)


def test_leaving_the_block_on_an_error_fails_the_work_running_and_waiting_instead_of_waiting_for_it():
    """A stage whose flow fails (another cell's error, Ctrl-C) must not hang on cells its threads still wait for."""
    outcomes: list[str] = []

    def wait_on(pool: WorkerProcesses) -> None:
        try:
            pool.run(sleep_for, 60)
            outcomes.append("finished")
        except Exception as error:  # noqa: BLE001  (the kind is what the test looks at)
            outcomes.append(type(error).__name__)

    started = time.monotonic()
    with pytest.raises(KeyError), WorkerProcesses(1) as pool:
        threads = [threading.Thread(target=wait_on, args=(pool,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # both submitted: one runs (once its worker has started), the other waits behind it
        raise KeyError("the flow failed")
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a thread still waits on its work"
    assert time.monotonic() - started < 30
    assert sorted(outcomes) and set(outcomes) <= {"BrokenProcessPool", "CancelledError"}, outcomes


def test_a_block_without_work_stops_its_workers_without_waiting_for_them_to_start():
    started = time.monotonic()
    with WorkerProcesses(2):
        pass
    assert time.monotonic() - started < 3.0  # terminated: not the seconds a spawned worker takes to import


def test_one_process_per_core_unless_asked_and_none_besides_the_stage_on_a_gpu():
    assert local_workers(0, gpus=0) == len(os.sched_getaffinity(0))
    assert local_workers(3, gpus=0) == 3
    assert local_workers(0, gpus=1) == local_workers(4, gpus=2) == 1
    with pytest.raises(ValueError, match="at least one worker"):
        WorkerProcesses(0)


def test_a_cell_trains_on_cpu_threads_on_the_cpu_and_the_threads_come_back_after():
    before = torch.get_num_threads()
    with cell_threads(torch.device("cpu")):
        assert torch.get_num_threads() == CPU_THREADS
    assert torch.get_num_threads() == before
    with cell_threads(torch.device("meta")):  # not the CPU: left as it is
        assert torch.get_num_threads() == before
