"""The task runner a sharded stage maps its shards (or cells) on: one thread here, or Dask (a LocalCluster
started here, or an existing cluster's address).

Every cluster started here has one thread per worker process, so a worker holds one copy of its model,
and on a GPU machine one worker per GPU, each pinned to its own: dask-cuda's LocalCUDACluster when it is
installed (`pip install '.[gpu]'`), else a LocalCluster whose worker k gets CUDA_VISIBLE_DEVICES=<GPU k>
in its Nanny's environment. A worker then takes cuda:0 of what it sees (mvcaug.core.devices.worker_device).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from prefect import Task, unmapped
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner


__all__ = ["map_shards", "shard_runner", "start_cluster"]

R = TypeVar("R")

if TYPE_CHECKING:
    from distributed.deploy import Cluster

log = logging.getLogger("mvcaug.runners")


def shard_runner(kind: str, dask_address: str = "", dask_workers: int = 2) -> TaskRunner[Any]:
    """local: a one-thread pool, which map_shards leaves idle (it runs local tasks in the flow's own thread); dask:
    prefect-dask's DaskTaskRunner, on the cluster at dask_address or on one started by start_cluster."""
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        # prefect-dask calls cluster_class(**cluster_kwargs); its annotation allows only a no-argument callable
        return DaskTaskRunner(cluster_class=start_cluster,  # type: ignore[arg-type]
                              cluster_kwargs={"n_workers": dask_workers})
    return ThreadPoolTaskRunner(max_workers=1)


def map_shards(task: Task[..., R], kind: str, *mapped: Iterable[Any], **fixed: Any) -> list[R]:
    """task over the items of `mapped` (zipped, as Task.map zips them), each call also given `fixed`; the results in
    order. local: each call in this thread (the flow's, the main one), one after another: in a worker thread (Prefect's
    thread pool) a classifier cell took 1.7x as long on 2 CPU cores (6.3 s against 3.7 s, the same result), as slow as
    the main thread with OMP_WAIT_POLICY=passive, so torch's OpenMP threads sleep between parallel regions there.
    dask (a Dask worker runs tasks in a thread of its own) and processes (the train stage's worker processes, each
    task waiting on its own in a thread of the flow's pool): Task.map on the flow's task runner."""
    if kind == "local":
        return [task(*args, **fixed) for args in zip(*mapped, strict=True)]
    same_for_all: dict[str, Any] = {name: unmapped(value) for name, value in fixed.items()}
    return task.map(*mapped, **same_for_all).result()


def start_cluster(n_workers: int, gpus: list[str] | None = None, **kwargs) -> Cluster:
    """A local Dask cluster of single-threaded workers: n_workers of them without a GPU; with GPUs (`gpus`,
    by default those this process sees), one per GPU, at most n_workers, each pinned to its own."""
    from distributed import LocalCluster

    if gpus is None:
        import torch  # here, not at the top: a stage that never starts a cluster need not import torch

        from mvcaug.core.devices import cluster_gpus

        gpus = cluster_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"),
                            torch.cuda.device_count() if torch.cuda.is_available() else 0)
    kwargs["threads_per_worker"] = 1
    if not gpus:
        return LocalCluster(n_workers=n_workers, **kwargs)
    if n_workers > len(gpus):
        log.warning("dask_workers is %d but %d GPUs are visible: starting %d workers, one per GPU",
                    n_workers, len(gpus), len(gpus))
    gpus = gpus[:n_workers]
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        return pinned_gpu_cluster(gpus, **kwargs)
    return LocalCUDACluster(n_workers=len(gpus), CUDA_VISIBLE_DEVICES=gpus, **kwargs)


@functools.cache
def _pinned_cluster_class() -> type:
    """The class of pinned_gpu_cluster, defined on first use: importing this module needs no distributed."""
    from distributed import LocalCluster

    class _Pinned(LocalCluster):
        """A LocalCluster whose workers are named by their GPU and see only it (dask-cuda's way of pinning,
        its new_worker_spec, without dask-cuda's RMM and CPU-affinity setup)."""

        def __init__(self, gpus: list[str], **kwargs):
            self.gpus = list(gpus)
            super().__init__(n_workers=0, **kwargs)
            self.scale(len(self.gpus))
            self.sync(self._correct_state)

        def new_worker_spec(self) -> dict:
            free = [gpu for gpu in self.gpus if gpu not in self.worker_spec]
            if not free:
                raise ValueError(f"cannot start more workers than GPUs {self.gpus}")
            spec = copy.deepcopy(self.new_spec)
            spec["options"]["env"] = {**spec["options"].get("env", {}), "CUDA_VISIBLE_DEVICES": free[0]}
            return {free[0]: spec}

    return _Pinned


def pinned_gpu_cluster(gpus: list[str], **kwargs) -> Cluster:
    """A LocalCluster of one worker per GPU in `gpus`, worker `g` started with CUDA_VISIBLE_DEVICES=g."""
    return _pinned_cluster_class()(gpus, **kwargs)
