"""Flow of the quality stage: how faithful, diverse and novel the synthetic images are."""

from pathlib import Path

from prefect import flow

from flows.cli import run_stage
from mvcaug.params import load_params
from tasks.quality import quality


@flow(name="quality")
def quality_flow(params_file: str = "params.yaml") -> dict:
    """Measure the synthetic set against the real training images."""
    params = load_params(params_file)
    return quality(params, str(Path(params.paths.quality) / "metrics.json"))


if __name__ == "__main__":
    run_stage(quality_flow)
