"""Flow of the train stage: the evaluation grid, one task per cell; cells with unchanged inputs are kept.

train.task_runner: local trains the cells one after another in this process; dask maps them on a Dask
cluster (flows/runners.py: one single-threaded worker per GPU), each worker reading the data once. Each
cell's result.json is stored as the cell finishes, so an interrupted grid resumes where it stopped.
"""

import logging
from pathlib import Path

from prefect import flow

from flows.cli import run_stage
from flows.runners import map_shards, shard_runner
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
    # Dask workers read the data themselves (once each) rather than receive it with every cell.
    source = data if params.train.task_runner == "local" else StoredData(root, params_file)
    outcomes = map_shards(train_cell, params.train.task_runner, cells, data=source, params=params.train,
                          digests=digests, cells_dir=outputs.cells, run_dir=str(Path(root) / params.paths.run))
    write_results(outputs.results, [result for result, _ in outcomes])
    train_plots(cells, outputs.cells, outputs.plots)
    trained = sum(now for _, now in outcomes)
    summary = {"cells": len(cells), "trained": trained, "kept": len(cells) - trained, "removed": len(removed)}
    log.info("train: %s", summary)
    return summary


def run_train_flow(params_file: str = "params.yaml", repeated_only: bool = False) -> dict:
    """Run train_flow with the task runner that params.yaml asks for (train.task_runner)."""
    t = load_params(params_file).train
    check_pretrained_files(t.models, t.model_settings)  # before any cell or worker starts
    runner = shard_runner(t.task_runner, t.dask_address, t.dask_workers)
    return train_flow.with_options(task_runner=runner)(str(Path.cwd()), params_file, repeated_only)


if __name__ == "__main__":
    run_stage(run_train_flow)
