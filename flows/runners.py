"""The task runner a sharded stage maps its shards on: threads here, or Dask (a LocalCluster or a cluster's address)."""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner


def shard_runner(kind: str, dask_address: str = "", dask_workers: int = 2) -> TaskRunner:
    """local: one shard at a time in this process; dask: prefect-dask's DaskTaskRunner.

    One thread per Dask worker, so each worker process holds one copy of the model.
    """
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1})
    return ThreadPoolTaskRunner(max_workers=1)
