"""map_shards on the local runner: every shard through the task, in order, in the flow's own thread (torch's work
runs 1.7x slower in a worker thread on 2 CPU cores: flows/runners.py)."""

from __future__ import annotations

import threading

from prefect import flow, task

from flows.runners import map_shards, shard_runner


@task
def where_and_what(shard: int, offset: int, scale: int) -> tuple[str, int]:
    return threading.current_thread().name, (shard + offset) * scale


@flow
def mapped_flow(shards: list[int], offsets: list[int]) -> tuple[str, list[tuple[str, int]]]:
    return threading.current_thread().name, map_shards(where_and_what, "local", shards, offsets, scale=10)


def test_local_shards_run_in_order_in_the_flows_own_thread_with_the_shared_arguments():
    flow_thread, results = mapped_flow.with_options(task_runner=shard_runner("local"))([1, 2, 3], [0, 10, 20])
    assert [value for _, value in results] == [10, 120, 230]  # zipped like Task.map, `scale` given to each
    assert {thread for thread, _ in results} == {flow_thread}  # not a thread of the task runner's pool
