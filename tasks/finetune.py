"""Task of the finetune stage."""

import dataclasses
import shutil
import statistics
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.atomic import write_json, write_text
from mvcaug.io.digests import digest_files
from mvcaug.core.errors import MissingInputError, UserError
from mvcaug.models.denoiser import Denoiser, save_denoiser
from mvcaug.io.embedding_table import read_embeddings
from mvcaug.method.finetune import (
    ClassConditions, ConditionSampler, build_denoiser, train_denoiser, trained, validation_grid,
)
from mvcaug.data.images import ImageSet, corpus_images, load_split, read_manifest, resize
from mvcaug.models.lora import is_lora
from mvcaug.models.model_card import CARD, CardFacts, model_card
from mvcaug.core.params import Params
from mvcaug.models.pretrain_files import CORPUS
from mvcaug.models.pretrained import loads_as_pipeline, remove_pipeline_parts, save_pipeline_parts
from mvcaug.data.retrieval import shared_images


def data_digests(params: Params) -> dict[str, str]:
    """What the checkpoints' fingerprint needs of the stage's inputs (the manifest holds every image's sha256)."""
    paths = params.paths
    embeddings = Path(paths.embeddings)
    return {
        "images": digest_files([Path(paths.prepared) / "manifest.parquet"]),
        "embeddings": digest_files([embeddings / "embeddings.parquet", embeddings / "null.parquet"]),
        "mixed": digest_files([paths.mixed]),
        "format": f"{params.prepare.channels}x{params.prepare.resolution}",
    }


def load_inputs(params: Params) -> tuple[ImageSet, ConditionSampler, np.ndarray]:
    """(training images, the sampler over their classes, the null text embedding)."""
    paths, p = params.paths, params.finetune
    images = load_split(paths.prepared, "train", params.prepare.channels, model_resolution=True)
    captions, caption_emb, _ = read_embeddings(Path(paths.embeddings) / "embeddings.parquet")
    _, null, _ = read_embeddings(Path(paths.embeddings) / "null.parquet")
    mixed, mixed_emb, _ = read_embeddings(paths.mixed)
    caption_labels = np.array(captions["label"].to_pylist())
    caption_ids = captions["id"].to_pylist()
    mixed_labels = np.array(mixed["label"].to_pylist())
    classes = {}
    for label in sorted(set(images.labels)):
        rows = np.flatnonzero(caption_labels == label)
        indices = images.of_class(label)
        classes[label] = ClassConditions(indices, caption_emb[rows].astype(np.float32),
                                         mixed_emb[mixed_labels == label].astype(np.float32),
                                         caption_of_image=own_captions(indices, images.ids, [caption_ids[r] for r in rows]))
    return images, ConditionSampler(classes, params.mix, p.text_condition, p.seed), null[0].astype(np.float32)


def check_corpus_disjoint(params: Params) -> None:
    """A generator pretrains only on data that cannot hold the task's images: refuse a pretraining corpus (the
    pretrain stage's corpus.parquet beside finetune.pretrained) with an image equal to one of any split of the
    task's, e.g. a test image copied into pretrain.folder. Equal means equal 8-bit pixels once converted."""
    p, prepare = params.finetune, params.prepare
    corpus_file = Path(p.pretrained) / CORPUS
    if p.init != "pretrained" or not corpus_file.is_file():
        return
    table = pq.read_table(corpus_file)
    corpus = corpus_images(table, prepare.channels, prepare.resolution)
    sources = dict(zip(corpus.ids, table.column("source").to_pylist())) if "source" in table.column_names else {}
    splits = sorted(set(read_manifest(params.paths.prepared).column("split").to_pylist()))
    for split in splits:
        shared = shared_images(corpus, load_split(params.paths.prepared, split, prepare.channels))
        if shared:
            outside, inside = shared[0]
            shown = f"{outside} ({sources[outside]})" if outside in sources else outside
            raise UserError(f"{corpus_file}: {len(shared)} pretraining image(s) equal images of the task's {split} "
                            f"split, e.g. {shown} = {inside}; remove them from the pretraining data (pretrain.folder) "
                            "and rerun pretrain: a generator must not pretrain on the task's images")


def own_captions(indices: np.ndarray, image_ids: list[str], caption_ids: list[str]) -> np.ndarray:
    """For each image of a class (rows `indices` of the training images), the position of its own caption among
    the class's captions: what finetune.text_condition target starts from."""
    position = {caption_id: k for k, caption_id in enumerate(caption_ids)}
    missing = [image_ids[i] for i in indices if image_ids[i] not in position]
    if missing:
        raise MissingInputError(f"no caption embedding for training image '{missing[0]}'; rerun the caption and embed "
                                "stages (dvc repro embed)")
    return np.array([position[image_ids[i]] for i in indices], dtype=np.int64)


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
    remove_pipeline_parts(model_dir)  # an interrupted save never leaves an index beside parts of another model
    save_denoiser(denoiser, model_dir)
    if facts.pipeline and not save_pipeline_parts(model_dir, denoiser, params.finetune.pretrained):
        facts = dataclasses.replace(facts, pipeline=False)
    write_text(model_dir / CARD, model_card(facts))


@task(cache_policy=NO_CACHE)
def finetune(params: Params) -> dict:
    """Train the denoiser and save unet/, scheduler/, codec.json, README.md (the model card), metrics.json,
    loss.csv and live/ (and, from a Stable Diffusion base, model_index.json, vae/, text_encoder/, tokenizer/).
    Under `accelerate launch` every process trains; only the main one writes."""
    from accelerate import PartialState
    from dvclive import Live

    model_dir, p, prepare = Path(params.paths.model), params.finetune, params.prepare
    check_corpus_disjoint(params)
    images, sampler, null = load_inputs(params)
    state = PartialState(cpu=not torch.cuda.is_available())  # this process's device under `accelerate launch`
    resolution = p.resolution or prepare.model_resolution or prepare.resolution
    denoiser = build_denoiser(p, prepare.channels, resolution, null.shape[-1], state.device)
    live = Live(str(model_dir / "live"), save_dvc_exp=False, dvcyaml=None, report=None) if state.is_main_process else None

    def log_grid(step: int, grid: torch.Tensor) -> None:
        live.log_image(f"validation/{step:06d}.png", validation_grid(grid))

    digests = data_digests(params)
    losses = train_denoiser(
        denoiser, resize(images.pixels, resolution), sampler, null, p, on_validation=log_grid if live else None,
        checkpoint_dir=model_dir / "checkpoints", data_digests=digests,
    )
    tail = losses[-max(1, len(losses) // 10):]
    metrics = {"loss_first": round(statistics.fmean(losses[: len(tail)]), 5),
               "loss_last": round(statistics.fmean(tail), 5), "steps": len(losses),
               "parameters": sum(t.numel() for t in denoiser.unet.parameters()),
               "trained_parameters": sum(t.numel() for t in trained(denoiser.unet))}
    if state.is_main_process:
        save_model(params, denoiser, model_dir, card_facts(params, denoiser, resolution, len(losses), digests))
        write_json(model_dir / "metrics.json", metrics)
        write_text(model_dir / "loss.csv", "step,loss\n" + "".join(f"{i},{v:.6f}\n" for i, v in enumerate(losses)))
        live.end()
        shutil.rmtree(model_dir / "checkpoints", ignore_errors=True)  # done: nothing left to resume
    return metrics
