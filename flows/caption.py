"""Flow of the caption stage: one prefixed caption per training image."""

from prefect import flow

from flows.cli import run_stage
from mvcaug.params import load_params
from tasks.caption import caption


@flow(name="caption")
def caption_flow(params_file: str = "params.yaml") -> int:
    """Caption the training split."""
    params = load_params(params_file)
    return caption(params.caption, params.prepare, params.paths.prepared, params.paths.captions)


if __name__ == "__main__":
    run_stage(caption_flow)
