"""Task of the caption stage: caption one shard of images; each worker loads its captioner once."""

import functools
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.caption import Captioner, build_captioner, caption_bodies
from mvcaug.params import CaptionParams, PrepareParams


@functools.lru_cache(maxsize=1)
def worker_captioner(params: CaptionParams, prepare: PrepareParams) -> Captioner:
    """The captioner of this process (a Dask worker keeps its model between shards)."""
    return build_captioner(params, prepare)


@task(cache_policy=NO_CACHE, task_run_name="caption-shard-{index}")
def caption_shard(
    rows: list[dict], index: int, params: CaptionParams, prepare: PrepareParams, prepared_dir: str
) -> tuple[str, list[str]]:
    """(captioner id, one caption body per row)."""
    captioner = worker_captioner(params, prepare)
    return captioner.id, caption_bodies(rows, Path(prepared_dir), captioner, params.batch_size)
