"""Tasks of the generate stage: one task per shard.

A shard task receives only the shard and the project root: each worker process (a thread here, a
Dask worker elsewhere) loads the model and embeddings once and keeps them, so nothing large is
shipped between processes.
"""

import functools
import zlib
from pathlib import Path

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.denoiser import load_denoiser
from mvcaug.devices import resolve_device, resolve_dtype
from mvcaug.embedding_table import read_embeddings
from mvcaug.checkpoints import digest_files
from mvcaug.generate import GenerationInputs, Shard, generate_shard
from mvcaug.images import load_split
from mvcaug.params import load_params
from mvcaug.pretrained import load_text_to_image


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
def load_inputs(root: str, params_file: str) -> GenerationInputs:
    """The model (fine-tuned, or the pretrained one alone), real training images, mixes, null text."""
    params = load_params(Path(root) / params_file)
    paths, g = params.paths, params.generate
    device = worker_device()
    dtype = resolve_dtype(g.dtype, device)
    if g.mode == "pretrained":
        denoiser, digest = load_text_to_image(params.finetune.pretrained, device, dtype), params.finetune.pretrained
    else:
        model_dir = Path(root) / paths.model
        files = sorted(p for p in model_dir.glob("*/*") if p.is_file()) + [model_dir / "codec.json"]
        denoiser, digest = load_denoiser(model_dir, device, dtype), digest_files(files)
    mixed, mixed_emb, _ = read_embeddings(Path(root) / paths.mixed)
    _, null, _ = read_embeddings(Path(root) / paths.embeddings / "null.parquet")
    labels, ids = np.array(mixed["label"].to_pylist()), np.array(mixed["id"].to_pylist())
    return GenerationInputs(
        denoiser=denoiser,
        model_digest=f"{g.mode}:{digest}:{dtype}",
        cond_images=load_split(Path(root) / paths.prepared, "train", params.prepare.channels),
        mixed_ids={label: ids[labels == label].tolist() for label in sorted(set(labels))},
        mixed={label: mixed_emb[labels == label].astype(np.float32) for label in sorted(set(labels))},
        null_text=null[0].astype(np.float32),
        resolution=params.prepare.resolution,
        params=g,
    )


@task(cache_policy=NO_CACHE, task_run_name="{shard.name}")
def generate(shard: Shard, root: str, params_file: str) -> tuple[list[dict], bool]:
    """Generate one shard, or keep it as it is when its fingerprint matches."""
    inputs = load_inputs(root, params_file)
    out_dir = Path(root) / load_params(Path(root) / params_file).paths.synthetic
    return generate_shard(shard, inputs, out_dir)
