"""One Dask worker per GPU, never two by accident: each worker's device from what it sees, the clusters
the product starts (one thread per worker, one GPU each), and models loaded once per process."""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
import time

import pytest
import torch

from mvcaug.core.devices import (
    UnpinnedWorker, choose_worker_device, cluster_gpus, load_once, started_by_dask_cuda, worker_device,
)

pytest.importorskip("distributed")


@pytest.mark.parametrize("gpus_seen, in_worker, dask_cuda, visible, expected", [
    (0, False, False, None, "cpu"),        # no GPU at all
    (0, True, False, "", "cpu"),           # a Dask worker on a CPU machine
    (1, True, False, "3", "cuda:0"),       # pinned by CUDA_VISIBLE_DEVICES: GPU 3 is its cuda:0
    (1, True, False, None, "cuda:0"),      # a one-GPU machine
    (4, False, False, None, "cuda:0"),     # the stage's own process (local runner)
    (4, True, True, "2,3,0,1", "cuda:0"),  # dask-cuda lists the worker's own GPU first
])
def test_a_worker_takes_cuda0_of_what_it_sees(gpus_seen, in_worker, dask_cuda, visible, expected):
    assert choose_worker_device(gpus_seen, in_worker, dask_cuda, visible) == torch.device(expected)


@pytest.mark.parametrize("gpus_seen, visible", [(2, None), (8, "0,1,2,3,4,5,6,7"), (2, "4,5")])
def test_a_dask_worker_that_sees_several_gpus_unpinned_is_refused(gpus_seen, visible):
    """The old rule (a hash of the worker's name modulo the GPUs) put two workers on one GPU; now a
    worker that cannot tell which GPU is its own stops with the way to pin it."""
    with pytest.raises(UnpinnedWorker) as info:
        choose_worker_device(gpus_seen, in_dask_worker=True, dask_cuda_worker=False, visible=visible)
    message = str(info.value)
    assert f"sees {gpus_seen} GPUs" in message and "dask cuda worker" in message and "\n" not in message
    assert (f"CUDA_VISIBLE_DEVICES={visible}" if visible else "CUDA_VISIBLE_DEVICES unset") in message


@pytest.mark.parametrize("visible, gpus_seen, expected", [
    (None, 0, []),
    ("", 0, []),
    (None, 2, ["0", "1"]),
    ("3,1", 2, ["3", "1"]),                # the user's choice and order are kept
    (" 2 , 5 ", 2, ["2", "5"]),
    ("GPU-8f0c,GPU-77aa", 2, ["GPU-8f0c", "GPU-77aa"]),  # UUIDs pass through
    ("0,1,7", 2, ["0", "1"]),              # an id CUDA does not see is not used
])
def test_a_local_cluster_pins_its_workers_to_the_gpus_this_process_sees(visible, gpus_seen, expected):
    assert cluster_gpus(visible, gpus_seen) == expected


def test_a_dask_cuda_worker_is_told_by_its_plugins():
    """dask-cuda gives every worker its plugins (dask_cuda.plugins); a plain worker has none of them."""
    plugin_class = type("PreImport", (), {"__module__": "dask_cuda.plugins"})
    plain_class = type("UploadFile", (), {"__module__": "distributed.diagnostics.plugin"})
    cuda_worker = type("Worker", (), {"plugins": {"pre-import": plugin_class(), "upload": plain_class()}})()
    plain_worker = type("Worker", (), {"plugins": {"upload": plain_class()}})()
    assert started_by_dask_cuda(cuda_worker) and not started_by_dask_cuda(plain_worker)


def test_the_local_cluster_the_product_starts_has_one_thread_per_worker():
    from distributed import Client
    from prefect_dask import DaskTaskRunner

    from flows.runners import shard_runner, start_cluster

    runner = shard_runner("dask", "", 2)
    assert isinstance(runner, DaskTaskRunner) and runner.cluster_class is start_cluster
    # The same factory and kwargs the runner uses; threads instead of processes, for speed.
    with start_cluster(**runner.cluster_kwargs, gpus=[], processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        workers = client.scheduler_info()["workers"].values()
        assert sorted(w["nthreads"] for w in workers) == [1, 1]
        assert client.submit(worker_device, pure=False).result() == torch.device("cpu")  # in a real worker, no GPU
    # asking for more threads is overruled: one model per worker process
    with start_cluster(1, gpus=[], processes=False, dashboard_address=None, threads_per_worker=4) as cluster, \
            Client(cluster) as client:
        assert [w["nthreads"] for w in client.scheduler_info()["workers"].values()] == [1]


@pytest.mark.skipif(importlib.util.find_spec("dask_cuda") is not None, reason="dask-cuda pins its own workers")
def test_without_dask_cuda_each_worker_of_a_gpu_cluster_sees_only_its_own_gpu():
    """Two GPUs named, three workers asked for: two workers, one thread each, each started with its own
    CUDA_VISIBLE_DEVICES (set by its Nanny before the worker process runs anything)."""
    from distributed import Client

    from flows.runners import start_cluster

    with start_cluster(3, gpus=["3", "5"], dashboard_address=None) as cluster, Client(cluster) as client:
        workers = client.scheduler_info()["workers"].values()
        assert sorted((w["name"], w["nthreads"]) for w in workers) == [("3", 1), ("5", 1)]
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(seen.values()) == ["3", "5"]


def loads_when_called_at_once(cache, threads: int = 6) -> tuple[int, list]:
    """Wrap a slow loader in `cache`, call it from `threads` threads released together: (loads, results)."""
    loads = []

    @cache
    def load(path: str) -> dict:
        loads.append(path)
        time.sleep(0.2)  # a model takes a while to load: every thread asks meanwhile
        return {"weights": path}

    start, results = threading.Barrier(threads), [None] * threads

    def call(k: int) -> None:
        start.wait()
        results[k] = load("model-dir")

    workers = [threading.Thread(target=call, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return len(loads), results


def test_a_model_is_loaded_once_per_process_however_many_threads_ask_at_once():
    loads, results = loads_when_called_at_once(load_once)
    assert loads == 1 and all(r is results[0] for r in results)
    # functools.lru_cache alone (what the loaders were) loads it in every thread that asks before the first is done
    loads, _ = loads_when_called_at_once(functools.lru_cache(maxsize=2))
    assert loads > 1


def test_one_loader_may_call_another():
    @load_once
    def model(path: str) -> str:
        return f"model:{path}"

    @load_once
    def inputs(path: str) -> tuple[str, str]:
        return model(path), "embeddings"

    assert inputs("x") == ("model:x", "embeddings")
