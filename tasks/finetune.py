"""Task of the finetune stage."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.atomic import write_json, write_text
from mvcaug.io.digests import digest_files
from mvcaug.models.denoiser import Denoiser
from mvcaug.io.embedding_table import read_embeddings
from mvcaug.data.images import ImageSet, corpus_images, refuse_task_images, resize
from mvcaug.io.images import has_model_copies, load_split, load_splits
from mvcaug.models.lora import is_lora
from mvcaug.models.model_card import CardFacts, model_card
from mvcaug.core.params import Params
from mvcaug.models.pretrained import loads_as_pipeline
from mvcaug.io.catalog import FILES
from mvcaug.core.devices import device_label
from mvcaug.core.throughput import Throughput
from mvcaug.io.stage_times import note_throughput

if TYPE_CHECKING:
    import torch
    from mvcaug.method.finetune import ConditionSampler

__all__ = ["data_digests", "check_corpus_disjoint", "card_facts", "save_model", "finetune"]


def data_digests(params: Params) -> dict[str, str]:
    """What the checkpoints' digest needs of the stage's inputs (the manifest holds every image's sha256)."""
    paths = params.paths
    embeddings = Path(paths.embeddings)
    return {
        "images": digest_files([Path(paths.prepared) / FILES.manifest]),
        "embeddings": digest_files([embeddings / FILES.embeddings, embeddings / FILES.null_embedding]),
        "mixed": digest_files([paths.mixed]),
        "format": f"{params.prepare.channels}x{params.prepare.resolution}",
    }


def load_inputs(params: Params, working: Mapping[str, ImageSet] | None = None
                ) -> tuple[ImageSet, ConditionSampler, np.ndarray]:
    """(training images, the sampler over their classes, the null text embedding). `working`: the task's splits
    already read at the working resolution (check_corpus_disjoint's), whose training split is the training images
    when prepare wrote no copies at the model's resolution: no split is read twice."""
    from mvcaug.method.finetune import ConditionSampler, class_conditions

    paths, p = params.paths, params.finetune
    if working and "train" in working and not has_model_copies(paths.prepared):
        images = working["train"]
    else:
        images = load_split(paths.prepared, "train", params.prepare.channels, model_resolution=True)
    captions, caption_emb, _ = read_embeddings(Path(paths.embeddings) / FILES.embeddings)
    _, null, _ = read_embeddings(Path(paths.embeddings) / FILES.null_embedding)
    mixed, mixed_emb, _ = read_embeddings(paths.mixed)
    classes = class_conditions(images.labels, images.ids, captions["label"].to_pylist(), captions["id"].to_pylist(),
                               caption_emb, mixed["label"].to_pylist(), mixed_emb)
    return images, ConditionSampler(classes, params.mix, p.text_condition, p.seed), null[0].astype(np.float32)


def check_corpus_disjoint(params: Params) -> dict[str, ImageSet]:
    """A generator pretrains only on data that cannot hold the task's images: refuse a pretraining corpus (the
    pretrain stage's corpus.parquet beside finetune.pretrained) with an image equal to one of any split of the
    task's, e.g. a test image copied into pretrain.folder. Equal means equal 8-bit pixels once converted.
    Returns the splits it read (every split, at the working resolution), {} when there is no corpus to check."""
    p, prepare = params.finetune, params.prepare
    corpus_file = Path(p.pretrained) / FILES.corpus
    if p.init != "pretrained" or not corpus_file.is_file():
        return {}
    table = pq.read_table(corpus_file)
    corpus = corpus_images(table, prepare.channels, prepare.resolution)
    sources = dict(zip(corpus.ids, table.column("source").to_pylist())) if "source" in table.column_names else {}
    splits = load_splits(params.paths.prepared, None, prepare.channels)
    refuse_task_images(corpus, splits, str(corpus_file), "pretraining image",
                       "remove them from the pretraining data (pretrain.folder) and rerun pretrain: a generator must "
                       "not pretrain on the task's images", sources)
    return splits


def card_facts(params: Params, denoiser: Denoiser, resolution: int, steps: int, digests: dict[str, str]) -> CardFacts:
    """What the model card states: the base, the data digests, the steps and the settings the model was made with."""
    p = params.finetune
    return CardFacts(
        base=p.pretrained if p.init == "pretrained" else "", pipeline=loads_as_pipeline(p), lora=is_lora(denoiser.unet),
        steps=steps, data=digests,
        params={"finetune": dataclasses.asdict(p), "resolution": resolution, "channels": params.prepare.channels,
                "mix": {"coarse_steps": params.mix.coarse_steps, "fine_steps": params.mix.fine_steps},
                "embed": {"encoder": params.embed.encoder}},
    )


def save_model(params: Params, denoiser: Denoiser, model_dir: Path, facts: CardFacts) -> None:
    """unet/, scheduler/, codec.json; with a Stable Diffusion base also the pipeline's other parts, so the
    folder loads in diffusers' StableDiffusionInstructPix2PixPipeline; and the model card, which says
    whether it does."""
    from mvcaug.io.models import remove_pipeline_parts, save_denoiser, save_pipeline_parts

    remove_pipeline_parts(model_dir)  # an interrupted save never leaves an index beside parts of another model
    save_denoiser(denoiser, model_dir)
    if facts.pipeline and not save_pipeline_parts(model_dir, denoiser, params.finetune.pretrained):
        facts = dataclasses.replace(facts, pipeline=False)
    write_text(model_dir / FILES.model_card, model_card(facts))


@task(cache_policy=NO_CACHE)
def finetune(params: Params) -> dict:
    """Train the denoiser and save unet/, scheduler/, codec.json, README.md (the model card), metrics.json,
    loss.csv and live/ (and, from a Stable Diffusion base, model_index.json, vae/, text_encoder/, tokenizer/).
    Under `accelerate launch` every process trains; only the main one writes."""
    import torch
    from mvcaug.method.finetune import build_denoiser, summarise_losses, train_denoiser, trained, validation_grid

    from accelerate import PartialState
    from dvclive import Live

    model_dir, p, prepare = Path(params.paths.model), params.finetune, params.prepare
    images, sampler, null = load_inputs(params, check_corpus_disjoint(params))
    state = PartialState(cpu=not torch.cuda.is_available())  # this process's device under `accelerate launch`
    resolution = p.resolution or prepare.model_resolution or prepare.resolution
    denoiser = build_denoiser(p, prepare.channels, resolution, null.shape[-1], state.device)
    live = Live(str(model_dir / FILES.live), save_dvc_exp=False, dvcyaml=None, report=None) if state.is_main_process else None

    def log_grid(step: int, grid: torch.Tensor) -> None:
        assert live is not None  # passed on only with a Live (the main process)
        live.log_image(f"validation/{step:06d}.png", validation_grid(grid))

    digests = data_digests(params)
    steps_now: list[int] = []  # the steps this process trains (a resumed run's earlier ones are not timed here)
    started = time.perf_counter()
    losses = train_denoiser(
        denoiser, resize(images.pixels, resolution), sampler, null, p, on_validation=log_grid if live else None,
        checkpoint_dir=model_dir / FILES.checkpoints, data_digests=digests, on_step=lambda step, _: steps_now.append(step),
    )
    if state.is_main_process:  # per device: one process's steps of its own batch
        note_throughput(params.paths.run, "finetune", Throughput(
            "training samples", len(steps_now) * p.batch_size, time.perf_counter() - started, device_label(state.device)))
    metrics = {**summarise_losses(losses),
               "parameters": sum(t.numel() for t in denoiser.unet.parameters()),
               "trained_parameters": sum(t.numel() for t in trained(denoiser.unet))}
    if state.is_main_process:
        save_model(params, denoiser, model_dir, card_facts(params, denoiser, resolution, len(losses), digests))
        write_json(model_dir / FILES.metrics, metrics)
        write_text(model_dir / FILES.loss, "step,loss\n" + "".join(f"{i},{v:.6f}\n" for i, v in enumerate(losses)))
        assert live is not None  # the main process made one
        live.end()
        shutil.rmtree(model_dir / FILES.checkpoints, ignore_errors=True)  # done: nothing left to resume
    return metrics
