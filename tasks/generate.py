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

from mvcaug.denoiser import Denoiser, load_denoiser
from mvcaug.devices import resolve_device, resolve_dtype
from mvcaug.embedding_table import read_embeddings
from mvcaug.digests import digest_files
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
def load_model(root: str, params_file: str) -> tuple[Denoiser, str]:
    """(the model, fine-tuned or the pretrained one alone; its digest), once per process for both sets."""
    params = load_params(Path(root) / params_file)
    g = params.generate
    device = worker_device()
    dtype = resolve_dtype(g.dtype, device)
    if g.mode == "pretrained":
        pretrained = params.finetune.pretrained
        return load_text_to_image(pretrained, device, dtype), f"{g.mode}:{pretrained}:{dtype}"
    model_dir = Path(root) / params.paths.model
    files = sorted(p for p in model_dir.glob("*/*") if p.is_file()) + [model_dir / "codec.json"]
    return load_denoiser(model_dir, device, dtype), f"{g.mode}:{digest_files(files)}:{dtype}"


@functools.lru_cache(maxsize=4)
def load_inputs(root: str, params_file: str, ablation: bool = False) -> GenerationInputs:
    """The model, real training images, null text, and the mixes: MVC's, or P = Q = 0 for the ablation."""
    params = load_params(Path(root) / params_file)
    paths = params.paths
    denoiser, digest = load_model(root, params_file)
    mixed, mixed_emb, _ = read_embeddings(Path(root) / (paths.mixed_ablation if ablation else paths.mixed))
    _, null, _ = read_embeddings(Path(root) / paths.embeddings / "null.parquet")
    labels, ids = np.array(mixed["label"].to_pylist()), np.array(mixed["id"].to_pylist())
    return GenerationInputs(
        denoiser=denoiser,
        model_digest=digest,
        cond_images=load_split(Path(root) / paths.prepared, "train", params.prepare.channels),
        mixed_ids={label: ids[labels == label].tolist() for label in sorted(set(labels))},
        mixed={label: mixed_emb[labels == label].astype(np.float32) for label in sorted(set(labels))},
        null_text=null[0].astype(np.float32),
        resolution=params.prepare.resolution,
        params=params.generate,
    )


def output_dir(root: str, params_file: str, ablation: bool = False) -> Path:
    """Where a set's shards go: paths.synthetic, or paths.synthetic_ablation for the P = Q = 0 set."""
    paths = load_params(Path(root) / params_file).paths
    return Path(root) / (paths.synthetic_ablation if ablation else paths.synthetic)


@task(cache_policy=NO_CACHE, task_run_name="{shard.name}")
def generate(shard: Shard, root: str, params_file: str, ablation: bool = False) -> tuple[list[dict], bool]:
    """Generate one shard of the MVC set (or of the ablation set), or keep it when its fingerprint matches."""
    inputs = load_inputs(root, params_file, ablation)
    return generate_shard(shard, inputs, output_dir(root, params_file, ablation))
