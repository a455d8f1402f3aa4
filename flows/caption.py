"""Flow of the caption stage: one prefixed caption per training image.

Bodies are cached by image content hash and captioner configuration (paths.cache), so only images
never captioned before reach the model; those are split into shards mapped on the task runner that
caption.task_runner names (threads here, or a Dask cluster).
"""

import logging
from pathlib import Path

from prefect import flow, unmapped

from flows.cli import run_stage
from flows.runners import shard_runner
from mvcaug.atomic import write_parquet
from mvcaug.caption import (
    caption_cache_namespace, caption_table, captioner_config, shard_rows, training_rows, uncached_rows,
)
from mvcaug.content_cache import ContentCache
from mvcaug.images import read_manifest
from mvcaug.params import load_params
from tasks.caption import caption_shard

log = logging.getLogger("mvcaug.caption")


@flow(name="caption")
def caption_images_flow(params_file: str = "params.yaml") -> dict:
    """Caption the training split, reusing cached bodies; returns counts."""
    params = load_params(params_file)
    c = params.caption
    prepared = Path(params.paths.prepared).resolve()
    rows = training_rows(read_manifest(prepared), prepared)
    config = captioner_config(c)
    cache = ContentCache(Path(params.paths.cache) / "content.sqlite") if config and params.paths.cache else None
    namespace = caption_cache_namespace(config) if cache else ""
    known = {k: v.decode() for k, v in cache.get_many(namespace, [r["sha256"] for r in rows]).items()} if cache else {}
    todo = uncached_rows(rows, known) if cache else rows
    shards = shard_rows(todo, c.shard_size)
    results = caption_shard.map(
        shards, range(len(shards)), params=unmapped(c), prepare=unmapped(params.prepare), prepared_dir=unmapped(str(prepared))
    ).result() if shards else []
    captioner_id = results[0][0] if results else config["id"]
    if cache:
        new = {row["sha256"]: body for shard, (_, bodies) in zip(shards, results) for row, body in zip(shard, bodies)}
        cache.put_many(namespace, {key: body.encode() for key, body in new.items()})
        bodies = [{**known, **new}[row["sha256"]] for row in rows]
    else:
        bodies = [body for _, shard_bodies in results for body in shard_bodies]
    table = caption_table(rows, bodies, captioner_id, c.prefix)
    write_parquet(params.paths.captions, table)
    summary = {"images": len(rows), "captioned": len(todo), "reused": len(rows) - len(todo),
               "shards": len(shards), "empty_bodies": sum(not body for body in bodies)}
    log.info("caption (%s): %s", captioner_id, summary)
    return summary


def caption_flow(params_file: str = "params.yaml") -> dict:
    """Run the caption flow on the task runner that params.yaml asks for."""
    c = load_params(params_file).caption
    return caption_images_flow.with_options(task_runner=shard_runner(c.task_runner, c.dask_address, c.dask_workers))(
        params_file
    )


if __name__ == "__main__":
    run_stage(caption_flow)
