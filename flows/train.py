"""Flow of the train stage: the evaluation grid, one task per cell; cells with unchanged inputs are kept.

train.task_runner: local trains the cells on this machine: on the CPU in train.workers spawned processes at once
(one per core by default, mvcaug.core.workers), each reading the data once and training one cell at a time on
one torch thread; with train.workers 1, or where a GPU is visible, one after another in this process. dask maps
them on a Dask cluster (flows/runners.py: one single-threaded worker per GPU), each worker reading the data
once. Every way gives the same results. Each cell's result.json is stored as the cell finishes, so an
interrupted grid resumes where it stopped.
"""

import logging
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.api_server import die_with_parent
from flows.cli import run_stage
from flows.runners import map_shards, shard_runner
from mvcaug.core.params import TrainParams
from mvcaug.core.workers import WorkerProcesses, local_workers
from mvcaug.io.classifiers import check_pretrained_files
from mvcaug.io.params_file import load_params
from mvcaug.method.replicates import repeated_cells
from tasks.train import (
    StoredData, load_training_data, plan, remove_stale_cells, train_cell, train_outputs, train_plots, write_results,
)

__all__ = ["train_flow", "run_train_flow"]

log = logging.getLogger("mvcaug.judging.train")


@flow(name="train")
def train_flow(root: str, params_file: str, repeated_only: bool = False) -> dict:
    """Train every cell whose inputs changed; write results.json for all of them and the plots folders.
    repeated_only: only the cells an extra generator repeats (mvcaug.method.replicates.repeated_cells)."""
    params = load_params(Path(root) / params_file)
    outputs = train_outputs(root, params)
    cells = plan(params)
    if repeated_only:
        cells = repeated_cells(cells)
    data, digests = load_training_data(params, cells)
    removed = remove_stale_cells(outputs.cells, cells)
    # one cell, or none (an extra generator repeats none of a real-only grid), needs no worker process
    run_dir, workers = str(Path(root) / params.paths.run), min(cell_processes(params.train), len(cells))
    if workers > 1:  # worker processes read the data themselves (once each) rather than receive it with every cell
        with WorkerProcesses(workers, setup=die_with_parent) as pool:
            outcomes = map_shards(train_cell, "processes", cells, data=StoredData(root, params_file),
                                  params=params.train, digests=digests, cells_dir=outputs.cells, run_dir=run_dir,
                                  workers=pool)
    else:  # Dask workers, too
        source = data if params.train.task_runner == "local" else StoredData(root, params_file)
        outcomes = map_shards(train_cell, params.train.task_runner, cells, data=source, params=params.train,
                              digests=digests, cells_dir=outputs.cells, run_dir=run_dir)
    write_results(outputs.results, [result for result, _ in outcomes])
    train_plots(cells, outputs.cells, outputs.plots)
    trained = sum(now for _, now in outcomes)
    summary = {"cells": len(cells), "trained": trained, "kept": len(cells) - trained, "removed": len(removed)}
    log.info("train: %s", summary)
    return summary


def cell_processes(train: TrainParams) -> int:
    """Worker processes the local runner trains cells in (train.workers on the CPU; 1 where a GPU is visible or
    on Dask, which has workers of its own)."""
    if train.task_runner != "local":
        return 1
    import torch  # here: resolving params needs no torch elsewhere

    return local_workers(train.workers, torch.cuda.device_count() if torch.cuda.is_available() else 0)


def run_train_flow(params_file: str = "params.yaml", repeated_only: bool = False) -> dict:
    """Run train_flow with the task runner that params.yaml asks for (train.task_runner): with worker processes,
    a pool of as many threads, each waiting on the cell its process trains."""
    t = load_params(params_file).train
    check_pretrained_files(t.models, t.model_settings)  # before any cell or worker starts
    workers = cell_processes(t)
    runner: TaskRunner[Any] = ThreadPoolTaskRunner(max_workers=workers) if workers > 1 else \
        shard_runner(t.task_runner, t.dask_address, t.dask_workers)
    return train_flow.with_options(task_runner=runner)(str(Path.cwd()), params_file, repeated_only)


if __name__ == "__main__":
    run_stage(run_train_flow)
