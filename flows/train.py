"""Flow of the train stage: the evaluation grid, cell by cell; cells with unchanged inputs are kept."""

import logging
import shutil
from dataclasses import asdict
from pathlib import Path

from prefect import flow

from flows.cli import run_stage
from mvcaug.atomic import write_json
from mvcaug.digests import digest_files
from mvcaug.images import load_split
from mvcaug.params import load_params
from mvcaug.train import (
    MVC, NO_MVC, TrainingData, cell_fingerprint, load_synthetic, plan_cells, stored_result,
)
from mvcaug.train_plots import PLOTS
from tasks.train import train, train_plots

log = logging.getLogger("mvcaug.train")


@flow(name="train")
def train_flow(params_file: str = "params.yaml") -> dict:
    """Train every cell of the grid whose inputs changed; write results.json for all of them."""
    params = load_params(params_file)
    channels, paths, grid = params.prepare.channels, params.paths, params.train
    real, val, test = (load_split(paths.prepared, split, channels) for split in ("train", "val", "test"))
    cells = plan_cells(grid, ablation=params.generate.ablation)
    # Only the synthetic sets some cell trains on are read: real-only grids need none.
    folders = {MVC: paths.synthetic, NO_MVC: paths.synthetic_ablation}
    used = {cell.synthetic_set for cell in cells if cell.strategy != "real"}
    synthetic = {name: load_synthetic(folders[name], channels) for name in used}
    digests = {name: digest_files(sorted(Path(folders[name]).glob("shard-*/*.png"))) for name in used}
    data = TrainingData(real, synthetic.get(MVC), val, test, sorted(set(real.labels)), synthetic.get(NO_MVC))
    data_digest = digest_files([Path(paths.prepared) / "manifest.parquet"])
    cells_dir = Path(paths.train) / "cells"
    for stale in set(p.name for p in cells_dir.glob("*")) - {c.name for c in cells}:
        shutil.rmtree(cells_dir / stale)
    results, trained = [], 0
    for cell in cells:
        fingerprint = cell_fingerprint(cell, grid, data_digest, digests)
        kept = stored_result(cells_dir / cell.name, fingerprint)
        if kept is not None:
            results.append(asdict(kept))
            continue
        results.append(train(cell, data, grid, str(cells_dir / cell.name), fingerprint))
        trained += 1
    write_json(Path(paths.train) / "results.json", results)
    train_plots(cells, str(cells_dir), str(Path(paths.train) / PLOTS))  # what dvc.yaml declares as plots
    summary = {"cells": len(cells), "trained": trained, "kept": len(cells) - trained}
    log.info("train: %s", summary)
    return summary


if __name__ == "__main__":
    run_stage(train_flow)
