"""Flow of the finetune stage: the InstructPix2Pix-style conditional denoiser."""

from prefect import flow

from flows.cli import run_stage
from mvcaug.params import load_params
from tasks.finetune import finetune


@flow(name="finetune")
def finetune_flow(params_file: str = "params.yaml") -> dict:
    """Train the denoiser on (x, x', MVC embedding) triples."""
    return finetune(load_params(params_file))


if __name__ == "__main__":
    run_stage(finetune_flow)
