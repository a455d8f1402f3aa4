"""Flow of the train stage: the evaluation grid, cell by cell; cells with unchanged inputs are kept."""

import logging
from pathlib import Path

from prefect import flow

from flows.cli import run_stage
from mvcaug.params import load_params
from mvcaug.train_plots import PLOTS
from tasks.train import load_training_data, plan, remove_stale_cells, train_cell, train_plots, write_results

log = logging.getLogger("mvcaug.train")


@flow(name="train")
def train_flow(params_file: str = "params.yaml") -> dict:
    """Train every cell whose inputs changed; write results.json for all of them and the plots folders."""
    params = load_params(params_file)
    root = Path(params.paths.train)
    cells = plan(params)
    data, digests = load_training_data(params, cells)
    removed = remove_stale_cells(str(root / "cells"), cells)
    outcomes = [train_cell(cell, data, params.train, digests, str(root / "cells")) for cell in cells]
    write_results(str(root / "results.json"), [result for result, _ in outcomes])
    train_plots(cells, str(root / "cells"), str(root / PLOTS))
    trained = sum(now for _, now in outcomes)
    summary = {"cells": len(cells), "trained": trained, "kept": len(cells) - trained, "removed": len(removed)}
    log.info("train: %s", summary)
    return summary


if __name__ == "__main__":
    run_stage(train_flow)
