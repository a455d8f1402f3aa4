"""Tasks of the generate stage: plan a set's shards, generate (or keep) each shard, write the manifest.

A task receives only a WorkUnit (whole shards, with their sets' names) and the project root: each worker
process (a thread here, a Dask worker elsewhere) loads the model and embeddings once and keeps them, so
nothing large is shipped between processes. The unit's pending shards are denoised together, in full
batches across shards, classes and sets, and each is stored as soon as its images are done. A shard is written into a hidden temporary folder that one rename
makes visible, with shard.json (its digest and rows) inside: a shard folder is complete or absent,
and an interrupted shard leaves only a temporary folder, removed by the next run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.atomic import fsync_path, write_json, write_parquet, write_png
from mvcaug.models.denoiser import Denoiser
from mvcaug.core.devices import load_once
from mvcaug.core.errors import MissingInputError
from mvcaug.method.generate import (
    GenerationInputs, Shard, ShardJob, WorkUnit, image_specs, plan_shards, plan_work, render_shards,
    shard_digest, synthetic_manifest, tune_denoiser,
)
from mvcaug.io.generation_inputs import load_inputs, load_model
from mvcaug.io.params_file import load_params
from mvcaug.io.stored import read_json
from mvcaug.data.synthetic_sets import SyntheticSet
from mvcaug.io.catalog import FILES
from mvcaug.core.devices import device_label
from mvcaug.core.throughput import Throughput
from mvcaug.io.stage_times import note_throughput

__all__ = ["store_shard", "store_shards", "remove_stale_shards", "plan_set", "remove_stale", "plan_tasks",
    "generate", "write_manifest", "clear_set"]

log = logging.getLogger("mvcaug.method.generate")
TEMPORARY = ".tmp-"


def completed_rows(shard_dir: Path, digest: str) -> list[dict] | None:
    """The shard's rows if its shard.json holds the digest and every image is there, else None."""
    record = read_json(shard_dir / FILES.shard_record)
    if not isinstance(record, dict) or record.get("digest") != digest:
        return None
    rows = record.get("rows", [])
    return rows if all((shard_dir.parent / r["path"]).is_file() for r in rows) else None


def store_shard(shard: Shard, inputs: GenerationInputs, out_dir: str | Path) -> tuple[list[dict], bool]:
    """Keep the stored shard when its digest matches, else generate it into a temporary folder and
    rename that into place; returns (manifest rows, whether it was generated now)."""
    return store_shards([(shard, inputs, Path(out_dir))])[0]


def store_shards(entries: list[tuple[Shard, GenerationInputs, Path]]) -> list[tuple[list[dict], bool]]:
    """(shard, its set's inputs, its set's folder) each: keep every stored shard whose digest matches;
    generate the others together (their images share batches) and store each as soon as its images are
    done, so an interruption loses only unfinished shards. Returns (manifest rows, whether generated now)
    per entry, in order."""
    results: list[tuple[list[dict], bool] | None] = [None] * len(entries)
    pending: list[ShardJob] = []
    target: dict[int, tuple[int, str, Path]] = {}
    for i, (shard, inputs, out_dir) in enumerate(entries):
        specs = image_specs(shard, inputs)
        digest = shard_digest(shard, specs, inputs)
        done = completed_rows(Path(out_dir) / shard.name, digest)
        if done is not None:
            results[i] = (done, False)
            continue
        job = ShardJob(shard, specs, inputs)
        pending.append(job)
        target[id(job)] = (i, digest, Path(out_dir))
    if pending:
        for job, rendered in render_shards(pending):
            i, digest, out_dir = target[id(job)]
            results[i] = (write_shard(job.shard, rendered, digest, out_dir), True)
    return results  # type: ignore[return-value]  # no None left: each entry was stored before or generated now


def write_shard(shard: Shard, rendered: list, digest: str, out_dir: Path) -> list[dict]:
    """The shard's images and shard.json into a temporary folder, renamed into place; returns its rows."""
    shard_dir = out_dir / shard.name
    tmp = out_dir / f"{TEMPORARY}{shard.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for row, image in rendered:
        write_png(tmp / Path(row["path"]).name, image)
    rows = [row for row, _ in rendered]
    write_json(tmp / FILES.shard_record, {"digest": digest, "rows": rows})
    shutil.rmtree(shard_dir, ignore_errors=True)
    os.replace(tmp, shard_dir)
    fsync_path(out_dir)
    return rows


def remove_stale_shards(out_dir: str | Path, shards: list[Shard]) -> list[str]:
    """Delete shard folders the plan no longer has (e.g. after lowering images_per_class) and temporary
    folders left by an interrupted run; returns the removed shard names."""
    keep = {s.name for s in shards}
    removed = []
    for folder in Path(out_dir).glob("*"):
        if folder.is_dir() and folder.name.startswith(TEMPORARY):
            shutil.rmtree(folder)
        elif folder.is_dir() and folder.name.startswith(FILES.shard_prefix) and folder.name not in keep:
            shutil.rmtree(folder)
            removed.append(folder.name)
    return sorted(removed)


def set_folder(root: str, params_file: str, set_name: str) -> Path:
    return Path(root) / SyntheticSet.named(set_name, load_params(Path(root) / params_file).paths).folder


@task(cache_policy=NO_CACHE)
def plan_set(root: str, params_file: str, set_name: str) -> list[Shard]:
    """The set's shards; the classes come from its mixes table, so planning loads no model. Shard folders
    the plan no longer has stay until the new manifest is written (remove_stale): a run that fails before
    then leaves the last manifest naming files that all exist."""
    params = load_params(Path(root) / params_file)
    mixed_file = Path(root) / SyntheticSet.named(set_name, params.paths).mixed
    if not mixed_file.is_file():
        raise MissingInputError(f"{mixed_file}: no mixes to generate from; run the mix stage first", stage="mix")
    labels = pc.unique(pq.read_table(mixed_file, columns=["label"])["label"]).to_pylist()
    return plan_shards(labels, params.generate)


@task(cache_policy=NO_CACHE)
def remove_stale(root: str, params_file: str, set_name: str, shards: list[Shard]) -> list[str]:
    """After the set's new manifest: delete the shard folders it no longer names, and temporary folders of
    interrupted runs; returns the removed shard names."""
    return remove_stale_shards(set_folder(root, params_file, set_name), shards)


def set_model(set_name: str, root: str, params_file: str) -> str:
    """The model a set is generated with: "pretrained" for the pretrained-only set, else generate.mode."""
    params = load_params(Path(root) / params_file)
    return "pretrained" if SyntheticSet.named(set_name, params.paths).pretrained_only else params.generate.mode


@load_once
def tuned_model(root: str, params_file: str, mode: str) -> Denoiser:
    """load_model's denoiser with generate.compile / channels_last / fuse_qkv applied, once per process and
    mode, so every set made by that model shares one (compiled) U-Net."""
    return tune_denoiser(load_model(root, params_file, mode)[0], load_params(Path(root) / params_file).generate)


def generation_inputs(root: str, params_file: str, set_name: str) -> GenerationInputs:
    """load_inputs with the tuned model: what the generate task denoises with."""
    denoiser = tuned_model(root, params_file, set_model(set_name, root, params_file))
    return dataclasses.replace(load_inputs(root, params_file, set_name), denoiser=denoiser)


@task(cache_policy=NO_CACHE)
def plan_tasks(root: str, params_file: str, shards: dict[str, list[Shard]]) -> list[WorkUnit]:
    """The planned shards of every set (set name -> shards) grouped into work units (mvcaug.method.generate.plan_work)."""
    params = load_params(Path(root) / params_file)
    return plan_work(shards, {name: set_model(name, root, params_file) for name in shards}, params.generate)


@task(cache_policy=NO_CACHE, task_run_name="{work.name}")
def generate(work: WorkUnit, root: str, params_file: str) -> list[tuple[str, list[dict], bool]]:
    """Generate the shards of a work unit, their images in shared batches, keeping each whose digest
    matches; (set name, manifest rows, whether generated now) per shard."""
    started = time.perf_counter()
    entries = [(shard, generation_inputs(root, params_file, name), set_folder(root, params_file, name))
               for name, shard in work.items]
    done = [(name, rows, made) for (name, _), (rows, made) in zip(work.items, store_shards(entries))]
    device = entries[0][1].denoiser.unet.device if entries else "cpu"  # a unit's sets share one worker's device
    note_throughput(Path(root) / load_params(Path(root) / params_file).paths.run, "generate", Throughput(
        "images", sum(len(rows) for _, rows, made in done if made), time.perf_counter() - started,
        device_label(device)))
    return done


@task(cache_policy=NO_CACHE)
def write_manifest(root: str, params_file: str, set_name: str, rows: list[dict]) -> int:
    """The set's manifest.parquet (sorted by class and index); returns its number of rows."""
    write_parquet(set_folder(root, params_file, set_name) / FILES.manifest, synthetic_manifest(rows))
    return len(rows)


@task(cache_policy=NO_CACHE)
def clear_set(root: str, params_file: str, set_name: str) -> int:
    """Empty a set that is switched off (an empty manifest, then its shards removed), so no stale image remains
    and no manifest ever names a removed one."""
    write_parquet(set_folder(root, params_file, set_name) / FILES.manifest, synthetic_manifest([]))
    return len(remove_stale_shards(set_folder(root, params_file, set_name), []))
