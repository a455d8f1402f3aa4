"""Flow of the quality stage: how faithful, diverse and novel the synthetic images are."""

from pathlib import Path

from prefect import flow

from flows.cli import run_stage
from tasks.quality import quality

__all__ = ["quality_flow"]


@flow(name="quality")
def quality_flow(params_file: str = "params.yaml") -> dict:
    """Measure the generated set against the real images, and the effect of its two conditions."""
    return quality(str(Path.cwd()), params_file)


if __name__ == "__main__":
    run_stage(quality_flow)
