"""Flow of the mix stage: N_y MVC embeddings per class, with provenance (and P = Q = 0 ones for the ablation)."""

from prefect import flow

from flows.cli import run_stage
from mvcaug.core.params import load_params
from tasks.mix import mix


@flow(name="mix")
def mix_flow(params_file: str = "params.yaml") -> int:
    """Mix visual concepts (Algorithm 1), and the unmixed P = Q = 0 table of the MVC ablation."""
    params = load_params(params_file)
    return mix(params.mix, params.paths.embeddings, params.paths.mixed, params.paths.mixed_ablation)


if __name__ == "__main__":
    run_stage(mix_flow)
