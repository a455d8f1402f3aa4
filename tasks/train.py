"""Task of the train stage: one classifier per (setting, seed), logged with dvclive."""

from dataclasses import asdict
from pathlib import Path

from dvclive import Live
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.images import ImageSet
from mvcaug.params import TrainParams
from mvcaug.train import train_one


@task(cache_policy=NO_CACHE, task_run_name="train {setting} seed {seed}")
def train_run(setting: str, seed: int, train: ImageSet, val: ImageSet, test: ImageSet,
              classes: list[str], params: TrainParams, runs_dir: str) -> dict:
    """Train and test one classifier; per-epoch loss and validation accuracy go to dvclive."""
    live_dir = Path(runs_dir) / f"{setting.replace('+', '_')}-seed{seed}"
    with Live(str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        def log_epoch(epoch: int, values: dict[str, float]) -> None:
            for name, value in values.items():
                live.log_metric(name, value)
            live.next_step()

        result = train_one(setting, seed, train, val, test, classes, params, log_epoch)
        live.summary.update({"test_acc": result.test_acc, "best_val_acc": result.val_acc})
    return asdict(result)
