"""Flow of the embed stage: token embeddings of every caption and of the empty text."""

from prefect import flow

from flows.cli import run_stage
from mvcaug.io.params_file import load_params
from tasks.embed import embed

__all__ = ["embed_flow"]


@flow(name="embed")
def embed_flow(params_file: str = "params.yaml") -> dict:
    """Embed captions with the text encoder."""
    params = load_params(params_file)
    return embed(params.embed, params.paths.captions, params.paths.embeddings, params.paths.cache)


if __name__ == "__main__":
    run_stage(embed_flow)
