"""Task of the caption stage."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.atomic import write_parquet
from mvcaug.caption import build_captioner, caption_images
from mvcaug.images import read_manifest
from mvcaug.params import CaptionParams, PrepareParams


@task(cache_policy=NO_CACHE)
def caption(params: CaptionParams, prepare: PrepareParams, prepared_dir: str, out_file: str) -> int:
    """Caption every training image; returns how many."""
    captioner = build_captioner(params, prepare)
    table = caption_images(read_manifest(prepared_dir), Path(prepared_dir), captioner, params)
    write_parquet(out_file, table)
    return table.num_rows
