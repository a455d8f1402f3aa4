"""Flow of the finetune stage: the InstructPix2Pix-style conditional denoiser.

On several GPUs: `accelerate launch -m flows.finetune [--params params.yaml]`. Rank 0 runs the Prefect
flow (one flow run in the UI); the other ranks run the same task body beside it, without Prefect.
"""

import argparse
import os

from prefect import flow

from flows.cli import run_stage
from mvcaug.io.params_file import load_params
from tasks.finetune import finetune

__all__ = ["finetune_flow"]


@flow(name="finetune")
def finetune_flow(params_file: str = "params.yaml") -> dict:
    """Train the denoiser on (x, x', MVC embedding) triples."""
    return finetune(load_params(params_file))


def run_worker() -> None:
    """A non-zero rank of `accelerate launch`: the task body only, so Prefect records one run."""
    parser = argparse.ArgumentParser(description=finetune_flow.__doc__)
    parser.add_argument("--params", default="params.yaml")
    args, _ = parser.parse_known_args()
    finetune.fn(load_params(args.params))


if __name__ == "__main__":
    if int(os.environ.get("RANK", "0")) > 0:
        run_worker()
    else:
        run_stage(finetune_flow)
