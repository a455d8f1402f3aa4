"""Flow of the pretrain stage: a small text-to-image model pretrained on a generic corpus (mvcaug.method.pretrain)."""

from prefect import flow

from flows.cli import run_stage
from mvcaug.io.params_file import load_params
from tasks.pretrain import pretrain

__all__ = ["pretrain_flow"]


@flow(name="pretrain")
def pretrain_flow(params_file: str = "params.yaml") -> dict:
    """Render and caption the corpus, pretrain the text-to-image U-Net on it, self-check it."""
    return pretrain(load_params(params_file))


if __name__ == "__main__":
    run_stage(pretrain_flow)
