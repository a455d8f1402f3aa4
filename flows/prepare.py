"""Flow of the prepare stage: the dataset as PNGs + manifest.parquet, split by class."""

from prefect import flow

from flows.cli import run_stage
from mvcaug.io.params_file import load_params
from tasks.prepare import prepare

__all__ = ["prepare_flow"]


@flow(name="prepare")
def prepare_flow(params_file: str = "params.yaml") -> int:
    """Materialise the dataset at the working resolution."""
    params = load_params(params_file)
    return prepare(params.prepare, params.paths.prepared)


if __name__ == "__main__":
    run_stage(prepare_flow)
