"""Flow of the mix stage: N_y MVC embeddings per class, with provenance (and the unmixed P = Q = 0 ones for the
MVC ablation)."""

from prefect import flow

from flows.cli import run_stage
from mvcaug.io.params_file import load_params
from tasks.mix import mix

__all__ = ["mix_flow"]


@flow(name="mix")
def mix_flow(params_file: str = "params.yaml") -> int:
    """Mix visual concepts (Algorithm 1), and the unmixed P = Q = 0 table of the MVC ablation."""
    params = load_params(params_file)
    return mix(params.mix, params.paths.embeddings, params.paths.mixed, params.paths.unmixed)


if __name__ == "__main__":
    run_stage(mix_flow)
