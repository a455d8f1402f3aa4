"""Tasks of the train stage: read the splits and synthetic sets, then one task per cell, which keeps a
stored result whose digest matches and otherwise trains the cell (dvclive logs, result.json).

On the local runner in the stage's own process (train.workers 1, or a GPU) a cell task receives the data in
memory; with worker processes (mvcaug.core.workers) or on Dask it receives a StoredData (the project root and
params file) and each worker process reads the data itself, once: shipping every split with each cell would send
the whole dataset to a worker once per cell.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.atomic import write_json, write_parquet
from mvcaug.core.devices import device_label, load_once, worker_device
from mvcaug.io.digests import digest_files, json_digest
from mvcaug.core.errors import MissingInputError, UserError
from mvcaug.data.images import ImageSet, corpus_images, refuse_task_images
from mvcaug.io.images import load_images, load_splits
from mvcaug.core.params import Params, PathsParams, TrainParams
from mvcaug.io.params_file import load_params
from mvcaug.data.retrieval import has_classes, retrieval_images
from mvcaug.io.stored import read_json
from mvcaug.data.synthetic_sets import SyntheticSet, decisions_file
from mvcaug.io.synthetic_sets import kept_rows
from mvcaug.judging.cells import CORPUS, Cell, RunResult
from mvcaug.io.train_plots import write_train_plots
from mvcaug.io.catalog import FILES
from mvcaug.core.throughput import Throughput
from mvcaug.io.stage_times import note_throughput
from mvcaug.core.workers import WorkerProcesses

if TYPE_CHECKING:
    from mvcaug.judging.train import TrainingData

__all__ = ["NothingKept", "StoredData", "TrainOutputs", "train_outputs", "plan_grid", "plan", "load_training_data",
    "read_training_data", "remove_stale_cells", "train_cell", "train_and_store", "write_results", "train_plots"]

log = logging.getLogger("mvcaug.judging.train")


class NothingKept(UserError, ValueError):
    """The filter kept no image of a synthetic set that cells train on."""


@dataclass(frozen=True)
class StoredData:
    """Where a worker reads the training data itself: the project root and the params file (under it)."""

    root: str
    params_file: str


@dataclass(frozen=True)
class TrainOutputs:
    """Where the train stage writes: a folder per cell, every cell's result in one file, the plots folders."""

    cells: str
    results: str
    plots: str


def train_outputs(root: str | Path, params: Params) -> TrainOutputs:
    """The train stage's outputs, paths.train taken under `root`, the project root the flow is given (not the
    working directory: the flow may run from elsewhere, and every task it hands a folder must write into the same
    one); as strings, which Prefect passes to tasks and Dask ships to workers as they are."""
    folder = Path(root) / params.paths.train
    return TrainOutputs(str(folder / FILES.cells), str(folder / FILES.results), str(folder / FILES.plots))


def plan_grid(params: Params) -> list[Cell]:
    """Every cell of the stage (mvcaug.judging.train.plan_stage_cells), once train.retrieval_folder is looked at."""
    from mvcaug.judging.train import plan_stage_cells

    return plan_stage_cells(params, has_classes(params.train.retrieval_folder))


def read_corpus(params: Params, classes: list[str]) -> ImageSet:
    """The pretraining corpus's images whose label is one of the task's classes, in corpus order."""
    path = Path(params.paths.pretrain) / FILES.corpus
    if not path.is_file():
        raise MissingInputError(f"{path}: no pretraining corpus; run the pretrain stage first",
                                stage="pretrain")
    corpus = corpus_images(pq.read_table(path), params.prepare.channels, params.prepare.resolution)
    missing = sorted(set(classes) - set(corpus.labels))
    if missing:
        raise UserError(f"{path}: the pretraining corpus has no image of class(es) {', '.join(missing)}, so the corpus "
                        "cells cannot add any; name the classes' glyphs in pretrain.glyphs or set pretrain.source: none")
    wanted = set(classes)
    return corpus.subset([i for i, label in enumerate(corpus.labels) if label in wanted])


def read_corpus_cells_data(params: Params, data: TrainingData, per_class: int) -> tuple[ImageSet, str]:
    """(the images the corpus cells add, their digest): from train.retrieval_folder when it has class folders,
    else the glyph corpus. Refused when any of them equals an image of the task (any split): the test images
    would then be training data."""
    folder = params.train.retrieval_folder
    if has_classes(folder):
        p = params.prepare
        corpus = retrieval_images(folder, data.classes, per_class, p.resolution, p.channels, p.resize, p.seed)
        where, digest = folder, json_digest(list(zip(corpus.ids, corpus.sha256)))
    else:
        corpus = read_corpus(params, data.classes)
        where, digest = str(Path(params.paths.pretrain) / FILES.corpus), digest_files([Path(params.paths.pretrain) / FILES.corpus])
    splits = {"train": data.real, "val": data.val, "test": data.test, "reference": data.reference}
    refuse_task_images(corpus, {name: split for name, split in splits.items() if split is not None}, where, "image",
                       "remove them: an image of the task's splits must not be added as extra data")
    return corpus, digest


@task(cache_policy=NO_CACHE)
def plan(params: Params) -> list[Cell]:
    """Every cell of the stage (plan_grid)."""
    return plan_grid(params)


@task(cache_policy=NO_CACHE)
def load_training_data(params: Params, cells: list[Cell]) -> tuple[TrainingData, dict[str, str]]:
    """(every split and the synthetic sets the cells train on, their digests: "data" and one per set)."""
    return read_training_data(params, cells)


def read_training_data(params: Params, cells: list[Cell]) -> tuple[TrainingData, dict[str, str]]:
    """load_training_data's work, also done by each Dask worker for itself (stored_training_data)."""
    from mvcaug.judging.train import TrainingData

    paths, channels = params.paths, params.prepare.channels
    real, val, test, reference = load_splits(paths.prepared, ("train", "val", "test", "reference"), channels).values()
    data = TrainingData(real, val, test, sorted(set(real.labels)), reference=reference)
    digests = {"data": digest_files([Path(paths.prepared) / FILES.manifest])}
    corpus_cells = [cell for cell in cells if cell.strategy == CORPUS]
    if corpus_cells:
        data.corpus, digests[CORPUS] = read_corpus_cells_data(params, data, max(c.added_per_class for c in corpus_cells))
    # Only the synthetic sets some cell trains on are read: real-only grids need none.
    for name in sorted({cell.synthetic_set for cell in cells if cell.uses_synthetic}):
        synthetic = SyntheticSet.named(name, paths)
        rows = kept_rows(synthetic, paths)
        if not rows:
            raise NothingKept(
                f"{decisions_file(synthetic, paths)}: the filter kept none of the synthetic images ({name}), so no "
                f"cell can train on them; see its {FILES.metrics} for why, then lower filter.confidence_quantile / "
                "near_copy_quantile / duplicate_quantile, or set filter.enabled: false")
        data.synthetic[name] = load_images(synthetic.folder, rows, channels, id_key="path")
        digests[name] = digest_files([Path(synthetic.folder) / row["path"] for row in rows])
    return data, digests


@load_once
def stored_training_data(root: str, params_file: str) -> TrainingData:
    """The data of every cell, read once per worker process: paths in the params are taken under root, since
    a worker of an existing cluster may run elsewhere than the flow (it must see the same files)."""
    params = load_params(Path(root) / params_file)
    paths = {f.name: getattr(params.paths, f.name) for f in dataclasses.fields(PathsParams)}
    under_root = {name: str(Path(root) / value) for name, value in paths.items() if isinstance(value, str) and value}
    params = dataclasses.replace(params, paths=dataclasses.replace(params.paths, **under_root))
    return read_training_data(params, plan_grid(params))[0]


@task(cache_policy=NO_CACHE)
def remove_stale_cells(cells_dir: str, cells: list[Cell]) -> list[str]:
    """Delete the folders of cells the grid no longer has; returns their names."""
    folder = Path(cells_dir)
    stale = sorted({p.name for p in folder.glob("*") if p.is_dir()} - {c.name for c in cells})
    for name in stale:
        shutil.rmtree(folder / name)
    return stale


@task(cache_policy=NO_CACHE, task_run_name="{cell.name}")
def train_cell(cell: Cell, data: TrainingData | StoredData, params: TrainParams, digests: dict[str, str],
               cells_dir: str, run_dir: str = "", workers: WorkerProcesses | None = None) -> tuple[RunResult, bool]:
    """(the cell's result, whether it was trained now): a stored result with the same digest is kept;
    otherwise the cell is trained (train_and_store), in one of `workers` when given (the data then a StoredData,
    which that process reads once), else here: the data in memory, or a StoredData this process (a Dask worker)
    reads once."""
    from mvcaug.judging.train import cell_digest, stored_result

    cell_dir = Path(cells_dir) / cell.name
    digest = cell_digest(cell, params, digests["data"], digests, worker_device())
    kept = stored_result(read_json(cell_dir / FILES.cell_result), digest)
    if kept is not None and (cell_dir / FILES.predictions).is_file():
        return kept, False
    if workers is not None:
        return workers.run(train_and_store, cell, data, params, digest, cells_dir, run_dir), True
    return train_and_store(cell, data, params, digest, cells_dir, run_dir), True


def train_and_store(cell: Cell, data: TrainingData | StoredData, params: TrainParams, digest: str, cells_dir: str,
                    run_dir: str = "") -> RunResult:
    """Train the cell (on CPU_THREADS torch threads on the CPU) and store it: its per-epoch loss and validation
    accuracy and the test confusion matrix of its kept weights go to dvclive, result.json stores the result with
    its digest. With run_dir (<paths.run>), its time is added to the stage's throughput (cells, epochs; on the CPU
    labelled as one thread's, so a run in n worker processes goes about n times that rate). A module-level
    function, so a worker process can run it."""
    from dvclive import Live
    from mvcaug.judging.train import CPU_THREADS, cell_threads, fit_cell

    cell_dir = Path(cells_dir) / cell.name
    device = worker_device()
    if isinstance(data, StoredData):
        data = stored_training_data(data.root, data.params_file)
    shutil.rmtree(cell_dir, ignore_errors=True)  # no stale dvclive steps from an older run
    with Live(str(cell_dir), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        epochs: list[int] = []
        test_predicted: list[int] = []

        def log_epoch(epoch: int, values: dict[str, float]) -> None:
            # the step set, not next_step(), which rewrites the summary and the studio and IDE markers at every
            # epoch (0.9 ms a step here): the same files, the summary written once, at the end
            epochs.append(epoch)
            live.step = epoch
            for name, value in values.items():
                live.log_metric(name, value)

        started = time.perf_counter()
        with cell_threads(device):
            result, _ = fit_cell(cell, data, params, log_epoch, device=device,
                                 on_test=lambda indices: test_predicted.extend(indices.tolist()))
        seconds = time.perf_counter() - started
        truth, predicted = list(data.test.labels), [data.classes[i] for i in test_predicted]
        live.log_sklearn_plot("confusion_matrix", truth, predicted, name=FILES.confusion_matrix)
        live.summary.update({"test_acc": result.test_acc, "best_val_acc": result.val_acc})
    write_parquet(cell_dir / FILES.predictions, pa.table({"id": data.test.ids, "truth": truth, "predicted": predicted}))
    write_json(cell_dir / FILES.cell_result, {"digest": digest, "result": result.to_json(), "device": str(device)})
    if run_dir:
        # on the CPU a cell has one thread, and the worker processes one core each: the rate is one core's
        label = device_label(device) if device.type != "cpu" else f"cpu, {CPU_THREADS} thread a cell"
        for what, count in (("classifier cells", 1), ("epochs", len(epochs))):
            note_throughput(run_dir, "train", Throughput(what, count, seconds, label))
    return result


@task(cache_policy=NO_CACHE)
def write_results(path: str, results: list[RunResult]) -> None:
    """results.json: every cell's result, in grid order."""
    write_json(path, [r.to_json() for r in results])


@task(cache_policy=NO_CACHE)
def train_plots(cells: list[Cell], cells_dir: str, plots_dir: str) -> dict[str, int]:
    """The folders that dvc.yaml declares as plots: every cell's curves, one confusion matrix per column."""
    return write_train_plots(cells, cells_dir, plots_dir)
