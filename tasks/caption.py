"""Tasks of the caption stage: find the images no cached body covers, caption them in shards (each
shard stores its bodies in the cache as soon as it finishes), then write captions.parquet.

Storing per shard means a late failure loses only the failing shard: a rerun finds the finished ones
in the cache. Each worker process (a thread here, a Dask worker elsewhere) loads its captioner once.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.atomic import write_parquet
from mvcaug.io.captions import build_captioner
from mvcaug.method.caption import (
    Captioner, cache_namespace, caption_bodies, caption_table, captioner_config, image_key,
    shard_rows, training_rows, uncached_rows,
)
from mvcaug.io.content_cache import ContentCache, open_cache, store_quietly
from mvcaug.io.images import read_manifest
from mvcaug.core.params import CaptionParams, Params, PrepareParams

__all__ = ["worker_captioner", "plan_captions", "caption_shard", "write_captions"]

log = logging.getLogger("mvcaug.method.caption")


@dataclass
class CaptionPlan:
    """The training rows, the bodies found in the cache (by content hash) and the shards left to caption."""

    rows: list[dict]
    known: dict[str, str]
    shards: list[list[dict]]
    captioner_id: str
    prepared_dir: str
    cache_file: str = ""
    namespace: str = ""


@functools.lru_cache(maxsize=1)
def worker_captioner(params: CaptionParams, prepare: PrepareParams) -> Captioner:
    """The captioner of this process (a Dask worker keeps its model between shards)."""
    return build_captioner(params, prepare)


@task(cache_policy=NO_CACHE)
def plan_captions(params: Params) -> CaptionPlan:
    """Read the training rows and look their content hashes up in the cache (paths.cache)."""
    c, prepared = params.caption, Path(params.paths.prepared).resolve()
    rows = training_rows(read_manifest(prepared), prepared)
    config = captioner_config(c)
    cache = open_cache(params.paths.cache) if config else None
    if cache is None:
        return CaptionPlan(rows, {}, shard_rows(rows, c.shard_size), config["id"] if config else "", str(prepared))
    assert config is not None  # a cache is opened only with a config
    namespace = cache_namespace(config)
    known = {k: v.decode() for k, v in cache.get_many(namespace, [image_key(r) for r in rows]).items()}
    todo = uncached_rows(rows, known)
    return CaptionPlan(rows, known, shard_rows(todo, c.shard_size), config["id"], str(prepared), str(cache.path),
                       namespace)


@task(cache_policy=NO_CACHE, task_run_name="caption-shard-{index}")
def caption_shard(rows: list[dict], index: int, params: CaptionParams, prepare: PrepareParams, prepared_dir: str,
                  cache_file: str = "", namespace: str = "") -> tuple[str, dict[str, str]]:
    """(captioner id, {content hash: body}) for one shard; the bodies go into the cache before returning."""
    captioner = worker_captioner(params, prepare)
    bodies = caption_bodies(rows, Path(prepared_dir), captioner, params.batch_size)
    by_hash = {image_key(row): body for row, body in zip(rows, bodies)}
    if cache_file:
        store_quietly(ContentCache(cache_file), namespace, {key: body.encode() for key, body in by_hash.items()})
    return captioner.id, by_hash


@task(cache_policy=NO_CACHE)
def write_captions(plan: CaptionPlan, results: list[tuple[str, dict[str, str]]], params: Params) -> dict:
    """captions.parquet from cached and new bodies, in manifest order; returns counts."""
    bodies = dict(plan.known)
    for _, by_hash in results:
        bodies.update(by_hash)
    captioner_id = results[0][0] if results else plan.captioner_id
    ordered = [bodies[image_key(row)] for row in plan.rows]
    write_parquet(params.paths.captions, caption_table(plan.rows, ordered, captioner_id, params.caption.prefix))
    captioned = sum(len(shard) for shard in plan.shards)
    summary = {"images": len(plan.rows), "captioned": captioned, "reused": len(plan.rows) - captioned,
               "shards": len(plan.shards), "empty_bodies": sum(not body for body in ordered)}
    log.info("caption (%s): %s", captioner_id, summary)
    return summary
