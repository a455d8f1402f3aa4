"""What the generate and quality stages read to generate images: the model (fine-tuned, or pretrained alone)
and a synthetic set's inputs, each loaded once per process.

Both stages' tasks call these (quality measures the condition effect with the same model and mixes), so they
live here, below the tasks, rather than in one task module that the other would import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvcaug.models.denoiser import Denoiser
from mvcaug.core.devices import load_once, resolve_dtype, worker_device
from mvcaug.io.digests import digest_files
from mvcaug.io.embedding_table import read_embeddings
from mvcaug.method.generate import GenerationInputs
from mvcaug.io.images import load_split
from mvcaug.io.params_file import load_params
from mvcaug.data.synthetic_sets import SyntheticSet
from mvcaug.io.catalog import FILES

__all__ = ["load_model", "load_inputs"]


@load_once
def load_model(root: str, params_file: str, mode: str) -> tuple[Denoiser, str]:
    """(the model: the fine-tuned one, or the pretrained one alone for mode "pretrained"; its digest), once
    per process and mode for every set, on this worker's own device (mvcaug.core.devices.worker_device)."""
    from mvcaug.io.models import load_denoiser, load_text_to_image

    params = load_params(Path(root) / params_file)
    g = params.generate
    device = worker_device()
    dtype = resolve_dtype(g.dtype, device)
    if mode == "pretrained":
        pretrained = params.finetune.pretrained
        local = Path(root) / pretrained
        # a local folder (the pretrain stage's model) by its content, so shards follow a retrained model;
        # a hub id by its name (the hub pins a revision's files)
        source = digest_files(model_files(local)) if (local / FILES.unet).is_dir() else pretrained
        return load_text_to_image(str(local) if local.is_dir() else pretrained, device, dtype), f"{mode}:{source}:{dtype}"
    model_dir = Path(root) / params.paths.model
    return load_denoiser(model_dir, device, dtype), f"{mode}:{digest_files(model_files(model_dir))}:{dtype}"


def model_files(folder: Path) -> list[Path]:
    """What generation loads of a model folder: the U-Net and scheduler, and codec.json where there is one; not the
    base's copied vae/, text_encoder/ and tokenizer/ beside them (for the stock pipeline), nor validation grids."""
    files = sorted(p for part in (FILES.unet, FILES.scheduler) for p in (folder / part).glob("*") if p.is_file())
    return files + [p for p in [folder / FILES.codec] if p.is_file()]


@load_once
def load_inputs(root: str, params_file: str, set_name: str) -> GenerationInputs:
    """The model, real training images, null text, and the set's mixes."""
    params = load_params(Path(root) / params_file)
    paths = params.paths
    synthetic_set = SyntheticSet.named(set_name, paths)
    denoiser, digest = load_model(root, params_file, "pretrained" if synthetic_set.pretrained_only else params.generate.mode)
    mixed, mixed_emb, _ = read_embeddings(Path(root) / synthetic_set.mixed)
    _, null, _ = read_embeddings(Path(root) / paths.embeddings / FILES.null_embedding)
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
