"""Flow of the train stage: classifiers on real and real+synthetic, several seeds."""

from pathlib import Path

from prefect import flow

from flows.cli import run_stage
from mvcaug.atomic import write_json
from mvcaug.images import load_split
from mvcaug.params import load_params
from mvcaug.train import load_synthetic, training_set
from tasks.train import train_run


@flow(name="train")
def train_flow(params_file: str = "params.yaml") -> list[dict]:
    """Train every (setting, seed); write results.json."""
    params = load_params(params_file)
    channels, paths = params.prepare.channels, params.paths
    real, val, test = (load_split(paths.prepared, split, channels) for split in ("train", "val", "test"))
    synthetic = load_synthetic(paths.synthetic, channels) if "real+synthetic" in params.train.settings else None
    classes = sorted(set(real.labels))
    results = [
        train_run(setting, seed, training_set(setting, real, synthetic), val, test, classes,
                  params.train, f"{paths.train}/runs")
        for setting in params.train.settings for seed in params.train.seeds
    ]
    write_json(Path(paths.train) / "results.json", results)
    return results


if __name__ == "__main__":
    run_stage(train_flow)
