"""Task of the train stage: one grid cell, logged with dvclive, its result stored with its fingerprint."""

from dataclasses import asdict
from pathlib import Path

from dvclive import Live
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.atomic import write_json
from mvcaug.params import TrainParams
from mvcaug.train import Cell, TrainingData, fit_cell, predict
from mvcaug.train_plots import CONFUSION_FILE, write_train_plots


@task(cache_policy=NO_CACHE, task_run_name="{cell.name}")
def train(cell: Cell, data: TrainingData, params: TrainParams, cell_dir: str, fingerprint: str) -> dict:
    """Train and test one cell; per-epoch loss and validation accuracy, and the test confusion matrix
    of the kept weights, go to dvclive."""
    with Live(cell_dir, save_dvc_exp=False, dvcyaml=None, report=None) as live:
        def log_epoch(epoch: int, values: dict[str, float]) -> None:
            for name, value in values.items():
                live.log_metric(name, value)
            live.next_step()

        run, model = fit_cell(cell, data, params, log_epoch)
        result = asdict(run)
        truth, predicted = predict(model, data.test, data.classes, params.model_settings[cell.model].image_size)
        live.log_sklearn_plot("confusion_matrix", truth, predicted, name=CONFUSION_FILE)
        live.summary.update({"test_acc": result["test_acc"], "best_val_acc": result["val_acc"]})
    write_json(Path(cell_dir) / "result.json", {"fingerprint": fingerprint, "result": result})
    return result


@task(cache_policy=NO_CACHE)
def train_plots(cells: list[Cell], cells_dir: str, plots_dir: str) -> dict[str, int]:
    """The folders that dvc.yaml declares as plots: every cell's curves, one confusion matrix per column."""
    return write_train_plots(cells, cells_dir, plots_dir)
