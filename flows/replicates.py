"""Flow of the replicates stage: generate.replicates - 1 more generators, each its own mix, finetune,
generate, filter and MVC-set cells (mvcaug.method.replicates); with generate.replicates: 1 it only writes the summary."""

from pathlib import Path

from prefect import flow

from flows.cli import run_stage
from flows.filter import filter_flow
from flows.finetune import finetune_flow
from flows.generate import run_generate_flow
from flows.mix import mix_flow
from flows.train import run_train_flow
from mvcaug.io.params_file import load_params
from tasks.replicates import clear_replicates, write_replicate_params, write_summary

__all__ = ["replicates_flow"]


@flow(name="replicates")
def replicates_flow(params_file: str = "params.yaml") -> dict:
    """Repeat the generator with shifted seeds, so the report's intervals cover its draw too."""
    params = load_params(params_file)
    clear_replicates(params)
    trained = {}
    for generator in range(1, params.generate.replicates):
        own = write_replicate_params(params, generator)
        mix_flow(own)
        finetune_flow(own)
        run_generate_flow(own)
        filter_flow(own)
        trained[generator] = run_train_flow(own, repeated_only=True)
    return write_summary(params, trained)


if __name__ == "__main__":
    run_stage(replicates_flow)
