"""Tasks of the generate stage: plan a set's shards, generate (or keep) each shard, write the manifest.

A shard task receives only the shard, the project root and the set's name: each worker process (a
thread here, a Dask worker elsewhere) loads the model and embeddings once and keeps them, so nothing
large is shipped between processes. A shard is written into a hidden temporary folder that one rename
makes visible, with shard.json (its fingerprint and rows) inside: a shard folder is complete or absent,
and an interrupted shard leaves only a temporary folder, removed by the next run.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.atomic import fsync_path, write_json, write_parquet, write_png
from mvcaug.denoiser import Denoiser, load_denoiser
from mvcaug.devices import resolve_device, resolve_dtype
from mvcaug.digests import digest_files
from mvcaug.embedding_table import read_embeddings
from mvcaug.errors import MissingInputError
from mvcaug.generate import (
    SHARD_RECORD, GenerationInputs, Shard, image_specs, plan_shards, render_shard, shard_fingerprint,
    synthetic_manifest,
)
from mvcaug.images import load_split
from mvcaug.params import load_params
from mvcaug.pretrained import load_text_to_image
from mvcaug.stored import read_json
from mvcaug.synthetic_sets import SyntheticSet

log = logging.getLogger("mvcaug.generate")
TEMPORARY = ".tmp-"


def worker_device() -> torch.device:
    """One GPU per Dask worker: worker k of a cluster takes GPU k mod the GPUs it sees."""
    device = resolve_device("auto")
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        return device
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):
        return device
    index = int(name) if name.isdigit() else zlib.crc32(name.encode())
    return torch.device("cuda", index % torch.cuda.device_count())


@functools.lru_cache(maxsize=2)
def load_model(root: str, params_file: str, mode: str) -> tuple[Denoiser, str]:
    """(the model: the fine-tuned one, or the pretrained one alone for mode "pretrained"; its digest), once
    per process and mode for every set."""
    params = load_params(Path(root) / params_file)
    g = params.generate
    device = worker_device()
    dtype = resolve_dtype(g.dtype, device)
    if mode == "pretrained":
        pretrained = params.finetune.pretrained
        return load_text_to_image(pretrained, device, dtype), f"{mode}:{pretrained}:{dtype}"
    model_dir = Path(root) / params.paths.model
    files = sorted(p for p in model_dir.glob("*/*") if p.is_file()) + [model_dir / "codec.json"]
    return load_denoiser(model_dir, device, dtype), f"{mode}:{digest_files(files)}:{dtype}"


@functools.lru_cache(maxsize=4)
def load_inputs(root: str, params_file: str, set_name: str) -> GenerationInputs:
    """The model, real training images, null text, and the set's mixes."""
    params = load_params(Path(root) / params_file)
    paths = params.paths
    synthetic_set = SyntheticSet.named(set_name, paths)
    denoiser, digest = load_model(root, params_file, "pretrained" if synthetic_set.pretrained_only else params.generate.mode)
    mixed, mixed_emb, _ = read_embeddings(Path(root) / synthetic_set.mixed)
    _, null, _ = read_embeddings(Path(root) / paths.embeddings / "null.parquet")
    labels, ids = np.array(mixed["label"].to_pylist()), np.array(mixed["id"].to_pylist())
    return GenerationInputs(
        denoiser=denoiser,
        model_digest=digest,
        cond_images=load_split(Path(root) / paths.prepared, "train", params.prepare.channels, model_resolution=True),
        mixed_ids={label: ids[labels == label].tolist() for label in sorted(set(labels))},
        mixed={label: mixed_emb[labels == label].astype(np.float32) for label in sorted(set(labels))},
        null_text=null[0].astype(np.float32),
        resolution=params.prepare.resolution,
        params=params.generate,
    )


def completed_rows(shard_dir: Path, fingerprint: str) -> list[dict] | None:
    """The shard's rows if its shard.json holds the fingerprint and every image is there, else None."""
    record = read_json(shard_dir / SHARD_RECORD)
    if not isinstance(record, dict) or record.get("fingerprint") != fingerprint:
        return None
    rows = record.get("rows", [])
    return rows if all((shard_dir.parent / r["path"]).is_file() for r in rows) else None


def store_shard(shard: Shard, inputs: GenerationInputs, out_dir: str | Path) -> tuple[list[dict], bool]:
    """Keep the stored shard when its fingerprint matches, else generate it into a temporary folder and
    rename that into place; returns (manifest rows, whether it was generated now)."""
    out_dir = Path(out_dir)
    shard_dir = out_dir / shard.name
    specs = image_specs(shard, inputs)
    fingerprint = shard_fingerprint(shard, specs, inputs)
    done = completed_rows(shard_dir, fingerprint)
    if done is not None:
        return done, False
    tmp = out_dir / f"{TEMPORARY}{shard.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    rendered = render_shard(shard, specs, inputs)
    for row, image in rendered:
        write_png(tmp / Path(row["path"]).name, image)
    rows = [row for row, _ in rendered]
    write_json(tmp / SHARD_RECORD, {"fingerprint": fingerprint, "rows": rows})
    shutil.rmtree(shard_dir, ignore_errors=True)
    os.replace(tmp, shard_dir)
    fsync_path(out_dir)
    return rows, True


def remove_stale_shards(out_dir: str | Path, shards: list[Shard]) -> list[str]:
    """Delete shard folders the plan no longer has (e.g. after lowering images_per_class) and temporary
    folders left by an interrupted run; returns the removed shard names."""
    keep = {s.name for s in shards}
    removed = []
    for folder in Path(out_dir).glob("*"):
        if folder.is_dir() and folder.name.startswith(TEMPORARY):
            shutil.rmtree(folder)
        elif folder.is_dir() and folder.name.startswith("shard-") and folder.name not in keep:
            shutil.rmtree(folder)
            removed.append(folder.name)
    return sorted(removed)


def set_folder(root: str, params_file: str, set_name: str) -> Path:
    return Path(root) / SyntheticSet.named(set_name, load_params(Path(root) / params_file).paths).folder


@task(cache_policy=NO_CACHE)
def plan_set(root: str, params_file: str, set_name: str) -> tuple[list[Shard], list[str]]:
    """(the set's shards, the stale shard folders removed); the classes come from its mixes table,
    so planning loads no model."""
    params = load_params(Path(root) / params_file)
    mixed_file = Path(root) / SyntheticSet.named(set_name, params.paths).mixed
    if not mixed_file.is_file():
        raise MissingInputError(f"{mixed_file}: no mixes to generate from; run the mix stage first (dvc repro mix)")
    labels = pc.unique(pq.read_table(mixed_file, columns=["label"])["label"]).to_pylist()
    shards = plan_shards(labels, params.generate)
    return shards, remove_stale_shards(set_folder(root, params_file, set_name), shards)


@task(cache_policy=NO_CACHE, task_run_name="{set_name}-{shard.name}")
def generate(shard: Shard, root: str, params_file: str, set_name: str) -> tuple[list[dict], bool]:
    """Generate one shard of a set, or keep it when its fingerprint matches."""
    return store_shard(shard, load_inputs(root, params_file, set_name), set_folder(root, params_file, set_name))


@task(cache_policy=NO_CACHE)
def write_manifest(root: str, params_file: str, set_name: str, rows: list[dict]) -> int:
    """The set's manifest.parquet (sorted by class and index); returns its number of rows."""
    write_parquet(set_folder(root, params_file, set_name) / "manifest.parquet", synthetic_manifest(rows))
    return len(rows)


@task(cache_policy=NO_CACHE)
def clear_set(root: str, params_file: str, set_name: str) -> int:
    """Empty a set that is switched off (its shards removed, an empty manifest), so no stale image remains."""
    removed = remove_stale_shards(set_folder(root, params_file, set_name), [])
    write_parquet(set_folder(root, params_file, set_name) / "manifest.parquet", synthetic_manifest([]))
    return len(removed)
