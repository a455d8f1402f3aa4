"""Task of the prepare stage: write the planned dataset (images first, the manifest last)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.atomic import write_bytes, write_parquet
from mvcaug.params import PrepareParams
from mvcaug.prepare import SPLITS, plan_dataset

log = logging.getLogger("mvcaug.prepare")


def prepare_dataset(params: PrepareParams, out_dir: str | Path) -> pa.Table:
    """Write images/<split>/<label>/<id>.png and manifest.parquet under out_dir; return the manifest.
    The images folder is written fresh (it is this stage's output alone); the manifest comes last, so its
    presence means the images are complete."""
    out_dir = Path(out_dir)
    plan = plan_dataset(params)
    for folder in ("images", "images_model"):
        shutil.rmtree(out_dir / folder, ignore_errors=True)
    for rel, data in plan.files:
        write_bytes(out_dir / rel, data)
    write_parquet(out_dir / "manifest.parquet", plan.manifest)
    splits = plan.manifest["split"].to_pylist()
    log.info("prepared %d images: %s", plan.manifest.num_rows, {s: splits.count(s) for s in SPLITS})
    return plan.manifest


@task(cache_policy=NO_CACHE)
def prepare(params: PrepareParams, out_dir: str) -> int:
    """Materialise the dataset; returns the number of images written."""
    return prepare_dataset(params, out_dir).num_rows
