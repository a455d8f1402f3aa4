"""Task of the finetune stage."""

import statistics
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.atomic import write_json, write_text
from mvcaug.denoiser import save_denoiser
from mvcaug.devices import resolve_device
from mvcaug.embedding_table import read_embeddings
from mvcaug.finetune import ClassConditions, ConditionSampler, build_denoiser, train_denoiser
from mvcaug.images import load_split
from mvcaug.params import Params


@task(cache_policy=NO_CACHE)
def finetune(params: Params) -> dict:
    """Train the denoiser and save unet/, scheduler/, codec.json, metrics.json and loss.csv."""
    paths, p = params.paths, params.finetune
    images = load_split(paths.prepared, "train", params.prepare.channels)
    captions, caption_emb, _ = read_embeddings(Path(paths.embeddings) / "embeddings.parquet")
    _, null, _ = read_embeddings(Path(paths.embeddings) / "null.parquet")
    mixed, mixed_emb, _ = read_embeddings(paths.mixed)
    caption_labels = np.array(captions["label"].to_pylist())
    mixed_labels = np.array(mixed["label"].to_pylist())
    classes = {
        label: ClassConditions(images.of_class(label), caption_emb[caption_labels == label].astype(np.float32),
                               mixed_emb[mixed_labels == label].astype(np.float32))
        for label in sorted(set(images.labels))
    }
    sampler = ConditionSampler(classes, params.mix, p.text_condition, p.seed)
    device = resolve_device("auto")
    denoiser = build_denoiser(p, params.prepare.channels, params.prepare.resolution, caption_emb.shape[2], device)
    losses = train_denoiser(denoiser, images.pixels, sampler, null[0].astype(np.float32), p)
    save_denoiser(denoiser, paths.model)
    tail = losses[-max(1, len(losses) // 10):]
    metrics = {"loss_first": round(statistics.fmean(losses[: len(tail)]), 5),
               "loss_last": round(statistics.fmean(tail), 5), "steps": len(losses),
               "parameters": sum(t.numel() for t in denoiser.unet.parameters())}
    write_json(Path(paths.model) / "metrics.json", metrics)
    write_text(Path(paths.model) / "loss.csv", "step,loss\n" + "".join(f"{i},{v:.6f}\n" for i, v in enumerate(losses)))
    return metrics
