"""Task of the pretrain stage: render and caption the corpus, train the text-to-image model, self-check it."""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.atomic import write_json, write_parquet, write_png, write_text
from mvcaug.io.captions import build_captioner
from mvcaug.method.caption import Captioner
from mvcaug.io.digests import json_digest
from mvcaug.io.content_cache import open_cache
from mvcaug.core.params import Params
from mvcaug.io.catalog import FILES
from mvcaug.core.devices import autocast_precision, device_label, resolve_device
from mvcaug.core.throughput import Throughput
from mvcaug.io.stage_times import note_throughput

if TYPE_CHECKING:
    from mvcaug.method.pretrain import Corpus, SelfCheck

__all__ = ["corpus_table", "pretrain"]

log = logging.getLogger("mvcaug.method.pretrain")

MODEL_PARTS = (FILES.unet, FILES.scheduler, FILES.codec, FILES.corpus, FILES.self_check, FILES.corpus_grid,
               FILES.samples_grid)
"""What a pretraining run writes besides metrics.json and README.md (removed when pretrain.source is none)."""


def embed_unique(texts: list[str], params: Params) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings of `texts`, the null text's), through the embed stage's cache (paths.cache)."""
    from mvcaug.method.embed import embed_texts, null_text

    embeddings, _ = embed_texts([*texts, null_text()], params.embed, open_cache(params.paths.cache))
    return embeddings[:-1], embeddings[-1]


def corpus_table(corpus: Corpus) -> pa.Table:
    """The manifest: every field a corpus image was drawn from, its caption and its pixels (uint8 bytes of
    channels x resolution x resolution), so the train stage's corpus cells read the very images pretraining saw."""
    pixels = ((corpus.pixels.clamp(-1, 1) + 1) * 127.5).round().numpy().astype(np.uint8)
    columns = {key: [row[key] for row in corpus.rows] for key in corpus.rows[0]}
    columns["pixels"] = [image.tobytes() for image in pixels]
    return pa.table(columns)


def folder_captioner(params: Params) -> Captioner:
    """caption.backend for an unlabeled folder: the offline captioner, BLIP-2, or (backend file) the
    metadata.jsonl / captions.csv inside pretrain.folder, keyed by each image's path there."""
    import dataclasses

    return build_captioner(dataclasses.replace(params.caption, captions_file=params.pretrain.folder), params.prepare)


def read_corpora(params: Params) -> tuple[Corpus, Corpus | None]:
    """(the training corpus, the self-check's held-out renders): glyphs have both; an unlabeled folder has no
    held-out set, since there is no glyph for a checker to read."""
    from mvcaug.method.pretrain import CHECK_SEED_OFFSET, folder_corpus, glyph_corpus

    p, prepare = params.pretrain, params.prepare
    if p.source == "folder":
        return folder_corpus(p.folder, prepare.resolution, prepare.channels, prepare.resize,
                             folder_captioner(params), params.caption.batch_size), None
    corpus = glyph_corpus(p.glyphs, p.per_glyph, p.seed, prepare.resolution, prepare.channels, params.caption.prefix,
                          "train")
    heldout = glyph_corpus(p.glyphs, p.check_per_glyph, p.seed + CHECK_SEED_OFFSET, prepare.resolution,
                           prepare.channels, params.caption.prefix, "check")
    return corpus, heldout


def clear_outputs(out: Path) -> None:
    """Remove a model an earlier run left, so pretrain.source: none leaves nothing to load by mistake."""
    for name in MODEL_PARTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@task(cache_policy=NO_CACHE)
def pretrain(params: Params) -> dict:
    """Write <paths.pretrain>: unet/, scheduler/, codec.json, corpus.parquet, self_check.csv, the grids,
    README.md and metrics.json (with pretrain.source none only the last two), all of them the same bytes for the
    same inputs; the self-checks' seconds go to <paths.run> (FILES.self_check_times)."""
    from mvcaug.io.models import save_denoiser
    from mvcaug.method.finetune import ConditionSampler, train_denoiser, validation_grid
    from mvcaug.method.pretrain import (
        NO_MIX, SelfCheck, accuracy, build_text_to_image, corpus_conditions, sample_text_to_image, train_checker,
        training_params,
    )

    p, out = params.pretrain, Path(params.paths.pretrain)
    out.mkdir(parents=True, exist_ok=True)
    clear_outputs(out)  # a model of another source never stays beside this run's files
    if p.source == "none":
        write_text(out / FILES.model_card, "# No pretrained model\n\npretrain.source is none: fine-tuning starts from "
                   "scratch or from the Stable Diffusion checkpoint that finetune.pretrained names.\n")
        metrics: dict = {"source": "none"}
        write_json(out / FILES.metrics, metrics)
        return metrics
    resolution, channels = params.prepare.resolution, params.prepare.channels
    started = time.perf_counter()
    # 1. The corpus (and for glyphs the self-check's held-out renders), captioned as the task's images are.
    corpus, heldout = read_corpora(params)
    check_captions = heldout.captions if heldout else []
    embeddings, null = embed_unique(corpus.captions + check_captions, params)
    train_text, check_text = embeddings[: len(corpus.ids)], embeddings[len(corpus.ids) :]
    log.info("pretrain corpus (%s): %d images, %d held out; read, captioned and embedded in %.1f s", p.source,
             len(corpus.ids), len(check_captions), time.perf_counter() - started)
    # 2. The judge (glyphs only): a classifier of the corpus's glyphs, and how well it reads held-out renders.
    classes = sorted(set(corpus.labels))
    checker = train_checker(corpus.pixels, corpus.labels, classes, p.seed) if heldout else None
    heldout_accuracy = accuracy(checker, heldout.pixels, heldout.labels, classes) if checker and heldout else 0.0
    # 3. Train, checking every check_every steps.
    device = resolve_device()  # CUDA when present, else the CPU
    check_precision = autocast_precision(p.check_precision, device)
    denoiser = build_text_to_image(p, channels, resolution, train_text.shape[-1], device)
    sampler = ConditionSampler(corpus_conditions(corpus, train_text), NO_MIX, "target", p.seed)
    curve: list[SelfCheck] = []
    train_started = time.perf_counter()

    def self_check(done: int) -> None:
        assert checker is not None and heldout is not None
        samples = sample_text_to_image(denoiser, check_text, null, p.check_guidance_scale, p.check_steps, p.seed,
                                       precision=check_precision)
        point = SelfCheck(done, round(time.perf_counter() - train_started, 1), heldout_accuracy,
                          accuracy(checker, samples.to(heldout.pixels.device), heldout.labels, classes), p.check_ratio)
        curve.append(point)
        log.info("self-check at step %d (%.0f s): samples (%s) read as asked %.1f%%, held-out renders %.1f%% "
                 "(ratio %.2f)", done, point.seconds, check_precision, 100 * point.sample_accuracy,
                 100 * heldout_accuracy, point.ratio)

    digests = {"corpus": json_digest(corpus.rows), "encoder": json_digest(params.embed.encoder),
               "format": f"{channels}x{resolution}"}
    steps_now: list[int] = []  # the steps this run trains (a resumed run's earlier ones are not timed here)
    losses = train_denoiser(denoiser, corpus.pixels, sampler, null, training_params(p),
                            on_check=self_check if checker else None, check_every=p.check_every if checker else 0,
                            checkpoint_dir=out / FILES.checkpoints, data_digests=digests,
                            on_step=lambda step, _: steps_now.append(step))
    note_throughput(params.paths.run, "pretrain", Throughput(
        "training samples", len(steps_now) * p.batch_size, time.perf_counter() - train_started, device_label(device)))
    if checker and (not curve or curve[-1].step != len(losses)):  # check_every 0: the final weights are checked
        self_check(len(losses))
    # 4. Save the model, the corpus, the curve and the grids.
    save_denoiser(denoiser, out)
    write_parquet(out / FILES.corpus, corpus_table(corpus))
    columns = len(p.glyphs) if heldout else 8
    write_png(out / FILES.corpus_grid, validation_grid(corpus.pixels[: 4 * columns], columns=columns))
    shown = check_text[: 4 * columns] if heldout else train_text[: 4 * columns]
    samples = sample_text_to_image(denoiser, shown, null, p.check_guidance_scale, p.check_steps, p.seed,
                                   precision=check_precision)
    write_png(out / FILES.samples_grid, validation_grid(samples, columns=columns))
    if curve:
        write_text(out / FILES.self_check, "step,sample_accuracy,heldout_accuracy,ratio\n" + "".join(
            f"{c.step},{c.sample_accuracy:.4f},{c.heldout_accuracy:.4f},{c.ratio:.4f}\n" for c in curve))
        write_text(Path(params.paths.run) / FILES.self_check_times,
                   "step,seconds\n" + "".join(f"{c.step},{c.seconds}\n" for c in curve))
    tail = losses[-max(1, len(losses) // 10):]
    metrics = {
        "source": p.source, "images": len(corpus.ids), "glyphs": len(p.glyphs) if heldout else 0,
        "steps": len(losses), "loss_last": round(statistics.fmean(tail), 5),
        "self_check": self_check_metrics(curve[-1], check_precision) if curve else None,
    }
    log.info("pretrain: %.1f s in the stage (corpus, training and self-checks)", time.perf_counter() - started)
    write_json(out / FILES.metrics, metrics)
    write_text(out / FILES.model_card, pretrain_card(params, metrics))
    shutil.rmtree(out / FILES.checkpoints, ignore_errors=True)  # done: nothing left to resume
    if curve and not curve[-1].passed:
        log.warning("the pretrained model fails its self-check (%.2f of the held-out accuracy, %.2f needed): its "
                    "samples do not yet show the glyph their caption asks for", curve[-1].ratio, p.check_ratio)
    if not curve:
        log.info("pretrain.source folder: no self-check (an unlabeled corpus names no glyph for a checker to read); "
                 "see the samples grid %s", out / FILES.samples_grid)
    return metrics


def self_check_metrics(final: SelfCheck, precision: str) -> dict:
    """The last self-check, as metrics.json keeps it, with the precision its samples were drawn in (bf16 or no:
    pretrain.check_precision as this device resolved it)."""
    return {"sample_accuracy": round(final.sample_accuracy, 4), "heldout_accuracy": round(final.heldout_accuracy, 4),
            "ratio": round(final.ratio, 4), "ratio_needed": final.ratio_needed, "passed": final.passed,
            "precision": precision}


def pretrain_card(params: Params, metrics: dict) -> str:
    """The model folder's README: what it is, what it was trained on, how it did, how to load it."""
    p, check = params.pretrain, metrics["self_check"]
    corpus = (f"{metrics['images']} unlabeled images of {p.folder}, each captioned by caption.backend "
              f"({params.caption.backend}) without a class prefix" if p.source == "folder" else
              f"{metrics['images']} glyph images ({len(p.glyphs)} glyphs: {p.glyphs}) rendered from matplotlib's font "
              "faces, each captioned by the offline captioner")
    verdict = (f"Self-check: none (an unlabeled corpus names no glyph for a checker to read); see {FILES.samples_grid}."
               if check is None else
               f"Self-check: a corpus classifier reads {100 * check['sample_accuracy']:.1f}% of the model's samples as "
               f"the glyph asked for, and {100 * check['heldout_accuracy']:.1f}% of held-out renders right (ratio "
               f"{check['ratio']:.2f}; {'passed' if check['passed'] else 'not passed'} at {check['ratio_needed']}).")
    return "\n".join([
        "---", "library_name: diffusers", "pipeline_tag: text-to-image", "tags:", "- mvcaug", "---", "",
        "# Pretrained text-to-image U-Net (mvcaug pretrain stage)", "",
        f"Trained from scratch for {metrics['steps']} steps on {corpus}.",
        f"Pixel space, {params.prepare.channels} channel(s) at {params.prepare.resolution} px; text from "
        f"{params.embed.encoder} (max_length {params.embed.max_length}).", "",
        verdict, "",
        "Load: `mvcaug.io.models.load_denoiser(<this folder>, device)`, or as finetune.pretrained with "
        "finetune.init: pretrained (conv_in is widened for the conditioning image).", "",
    ])
