"""Tasks of the generate stage: load inputs once, then one task per shard."""

from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.denoiser import load_denoiser
from mvcaug.devices import resolve_device
from mvcaug.embedding_table import read_embeddings
from mvcaug.generate import GenerationInputs, Shard, file_digest, generate_shard
from mvcaug.images import load_split
from mvcaug.params import Params


@task(cache_policy=NO_CACHE)
def load_inputs(params: Params) -> GenerationInputs:
    """The fine-tuned model, real training images, mixed and null embeddings."""
    paths = params.paths
    model_dir = Path(paths.model)
    model_files = sorted(p for p in model_dir.glob("*/*") if p.is_file()) + [model_dir / "codec.json"]
    denoiser = load_denoiser(model_dir, resolve_device("auto"))
    mixed, mixed_emb, _ = read_embeddings(paths.mixed)
    _, null, _ = read_embeddings(Path(paths.embeddings) / "null.parquet")
    labels = np.array(mixed["label"].to_pylist())
    ids = np.array(mixed["id"].to_pylist())
    return GenerationInputs(
        denoiser=denoiser,
        model_digest=file_digest(model_files),
        cond_images=load_split(paths.prepared, "train", params.prepare.channels),
        mixed_ids={label: ids[labels == label].tolist() for label in sorted(set(labels))},
        mixed={label: mixed_emb[labels == label].astype(np.float32) for label in sorted(set(labels))},
        null_text=null[0].astype(np.float32),
        resolution=params.prepare.resolution,
        params=params.generate,
    )


@task(cache_policy=NO_CACHE, task_run_name="shard {shard.name}")
def shard(shard: Shard, inputs: GenerationInputs, out_dir: str) -> tuple[list[dict], bool]:
    """Generate one shard, or take it as it is when its fingerprint matches."""
    return generate_shard(shard, inputs, out_dir)
