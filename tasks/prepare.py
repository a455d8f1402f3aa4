"""Task of the prepare stage: write the dataset image by image, beside the last good output, then swap it in."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.atomic import fsync_path, replacing_folder, write_bytes, write_parquet
from mvcaug.core.params import PrepareParams
from mvcaug.data.prepare import SPLITS, manifest_table, model_png, plan_splits, working_images
from mvcaug.io.image_folders import load_source, read_groups
from mvcaug.io.catalog import FILES

__all__ = ["prepare_dataset", "prepare"]

log = logging.getLogger("mvcaug.data.prepare")

STAGING = "staging"
"""Inside the folder being built: each working PNG as it is converted, before its split is known."""


def prepare_dataset(params: PrepareParams, out_dir: str | Path) -> pa.Table:
    """Write images/<split>/<label>/<id>.png (and images_model/ with a model resolution) and
    manifest.parquet as out_dir; return the manifest.

    The whole folder is built beside out_dir and swapped in when complete (mvcaug.io.atomic.replacing_folder):
    a failed or interrupted run outside `dvc repro` (`python -m flows.prepare`) leaves the last good output
    whole, never a manifest naming deleted files; under `dvc repro`, DVC removes the output before the stage
    runs and keeps the last good one in its cache.
    Each image is converted and written as it is read, so memory does not grow with the number of images:
    its working PNG waits under staging/ until every image is known (the split and the copies need them
    all), then is moved into its split; the training images are read once more for the model copies."""
    items = load_source(params)  # listing errors (folders, names, ids) before anything is built
    groups = read_groups(params.image_folder, items) if params.source == "imagefolder" else None
    with replacing_folder(out_dir) as build:
        staging = build / STAGING
        staging.mkdir()
        # Not flushed here: most are moved into place (and flushed there) or dropped by the split, and an
        # interrupted build is thrown away whole.
        kept = working_images(items, params, lambda item, data: (staging / f"{item.id}.png").write_bytes(data))
        planned = plan_splits(kept, params)
        model_sha256 = {}
        for row in planned:
            target = build / row.path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / f"{row.image.item.id}.png", target)
            fsync_path(target)
            if row.model_path:
                data = model_png(row.image.item, params)
                write_bytes(build / row.model_path, data)
                model_sha256[row.image.item.id] = hashlib.sha256(data).hexdigest()
        shutil.rmtree(staging)
        fsync_folders(build)
        manifest = manifest_table(planned, params, model_sha256, groups)
        write_parquet(build / FILES.manifest, manifest)
    splits = manifest["split"].to_pylist()
    log.info("prepared %d images: %s", manifest.num_rows, {s: splits.count(s) for s in SPLITS})
    return manifest


def fsync_folders(root: Path) -> None:
    """Flush every folder's entries under root (the renames out of staging), so the swapped-in output
    survives a power cut whole."""
    for folder, _, _ in os.walk(root):
        fsync_path(folder)


@task(cache_policy=NO_CACHE)
def prepare(params: PrepareParams, out_dir: str) -> int:
    """Materialise the dataset; returns the number of images written."""
    return prepare_dataset(params, out_dir).num_rows
