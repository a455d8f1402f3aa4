"""Pretrain a small text-to-image model on a generic captioned corpus, as Stable Diffusion is pretrained.

The paper fine-tunes a model whose cross-attention already ties words to appearance. The embedded default
has no such model to download, so the pretrain stage makes one: the same diffusers UNet2DConditionModel
family, text conditioned only, trained on a corpus that shares nothing with the task's data (mvcaug.data.glyphs),
each image's text its own caption. Fine-tuning then loads it exactly as it loads SD 1.5 (finetune.init:
pretrained; conv_in widened for the conditioning image).

The model proves itself before anything builds on it: a classifier trained on the corpus reads the model's
own text-to-image samples as the glyph their caption asked for, compared with how often it reads held-out
corpus renders right (the self-check).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mvcaug.method.caption import AttributeCaptioner, Captioner
from mvcaug.models.codecs import PixelCodec
from mvcaug.models.denoiser import Denoiser, build_scratch_unet, scratch_noise_scheduler
from mvcaug.method.finetune import ClassConditions
from mvcaug.data.glyphs import CANVAS, FACES, GlyphSpec, draw_specs, faces_folder, render
from mvcaug.io.fonts import load_faces
from mvcaug.core.params import FinetuneParams, MixParams, PretrainParams, ResizeMode
from mvcaug.data.prepare import to_working_image
from mvcaug.io.image_folders import folder_files, read_folder_image
from mvcaug.models.small_cnn import SmallCNN

__all__ = ["NO_MIX", "CHECK_SEED_OFFSET", "Corpus", "glyph_corpus", "folder_corpus", "corpus_conditions",
    "training_params", "build_text_to_image", "train_checker", "accuracy", "sample_text_to_image", "SelfCheck"]

NO_MIX = MixParams(per_class=1, coarse_steps=0, fine_steps=0)
"""Pretraining conditions on each image's own caption, unmixed (text_condition target with P = Q = 0)."""
CHECK_SEED_OFFSET = 1
"""The self-check's renders are drawn with pretrain.seed + 1: the same glyphs and faces, other transforms."""


@dataclass
class Corpus:
    """Captioned images of a corpus: pixels in [-1, 1], a label (the glyph's words) and a caption each."""

    ids: list[str]
    labels: list[str]
    captions: list[str]
    pixels: torch.Tensor  # (n, channels, resolution, resolution)
    rows: list[dict]  # the manifest: what each image was drawn from


def glyph_corpus(glyphs: str, per_glyph: int, seed: int, resolution: int, channels: int, prefix: str,
                 split: str) -> Corpus:
    """Render per_glyph images of each glyph and caption them as the offline captioner captions the task's
    images: prefix (caption.prefix, with the glyph's words as label) then the attribute sentence."""
    fonts = load_faces(faces_folder(), FACES, CANVAS)
    specs = [dataclasses.replace(spec, id=f"{split}-{spec.id}") for spec in draw_specs(glyphs, per_glyph, seed)]
    images = [render(spec, resolution, fonts) for spec in specs]
    bodies = AttributeCaptioner().describe(images, [spec.id for spec in specs])
    captions = [f"{prefix.format(label=spec.word)} {body}" for spec, body in zip(specs, bodies)]
    return Corpus(
        ids=[spec.id for spec in specs], labels=[spec.word for spec in specs], captions=captions,
        pixels=_to_pixels(images, channels), rows=[_row(spec, caption, split) for spec, caption in zip(specs, captions)],
    )


def folder_corpus(folder: str | Path, resolution: int, channels: int, resize: ResizeMode, captioner: Captioner,
                  batch_size: int = 64) -> Corpus:
    """A user's own unlabeled images as the corpus: each converted as prepare converts the task's images, and
    captioned by the configured captioner without the class prefix (there is no class to name). Images are read
    and captioned a batch at a time, so a large folder never sits in memory at full size."""
    root = Path(folder)
    files = folder_files(root)
    sources = [path.relative_to(root).as_posix() for path in files]
    images, captions = [], []
    for start in range(0, len(files), batch_size):
        batch = [to_working_image(read_folder_image(path), resolution, channels, resize)
                 for path in files[start : start + batch_size]]
        captions += [body.strip() for body in captioner.describe([image.convert("RGB") for image in batch],
                                                                 sources[start : start + batch_size])]
        images += batch
    ids = [f"folder-{i:06d}" for i in range(len(files))]
    rows = [{"id": i, "word": "", "source": source, "caption": caption, "split": "train"}
            for i, source, caption in zip(ids, sources, captions)]
    return Corpus(ids=ids, labels=[""] * len(ids), captions=captions, pixels=_to_pixels(images, channels), rows=rows)


def _row(spec: GlyphSpec, caption: str, split: str) -> dict:
    return {**dataclasses.asdict(spec), "caption": caption, "split": split}


def _to_pixels(images: list[Image.Image], channels: int) -> torch.Tensor:
    """Images as (n, channels, h, w) in [-1, 1]: grey ones (renders) repeated to three channels when asked,
    RGB ones channels first."""
    arrays = [np.asarray(image, np.float32) / 127.5 - 1.0 for image in images]
    if all(array.ndim == 2 for array in arrays):
        return torch.from_numpy(np.repeat(np.stack(arrays)[:, None], channels, axis=1))
    return torch.from_numpy(np.stack([array.transpose(2, 0, 1) for array in arrays]))


def corpus_conditions(corpus: Corpus, embeddings: np.ndarray) -> dict[str, ClassConditions]:
    """The finetune sampler's view of the corpus: per label, its images and their own captions' embeddings
    (row i of `embeddings` is caption i), so text_condition target gives each image its own caption."""
    labels = np.array(corpus.labels)
    classes = {}
    for label in sorted(set(corpus.labels)):
        rows = np.flatnonzero(labels == label)
        classes[label] = ClassConditions(
            image_indices=rows, caption_embeddings=embeddings[rows].astype(np.float32),
            mixed_embeddings=np.zeros((0, *embeddings.shape[1:]), np.float32), caption_of_image=np.arange(len(rows)),
        )
    return classes


def training_params(p: PretrainParams) -> FinetuneParams:
    """The pretrain section as the training loop's settings: the finetune loop (Accelerate, EMA, checkpoints)
    trains the text-to-image model; no image condition, so no image dropout."""
    return FinetuneParams(
        init="scratch", block_out_channels=p.block_out_channels, layers_per_block=p.layers_per_block,
        attention_head_dim=p.attention_head_dim, text_condition="target", steps=p.steps, batch_size=p.batch_size,
        learning_rate=p.learning_rate, lr_warmup_steps=p.lr_warmup_steps, lr_scheduler=p.lr_scheduler,
        text_dropout=p.text_dropout, image_dropout=0.0, both_dropout=0.0, num_train_timesteps=p.num_train_timesteps,
        seed=p.seed, ema=p.ema, ema_decay=p.ema_decay, checkpoint_every=p.checkpoint_every, validation_every=0,
        snr_gamma=p.snr_gamma,
    )


def build_text_to_image(p: PretrainParams, channels: int, resolution: int, text_dim: int,
                        device: torch.device) -> Denoiser:
    """A text-to-image U-Net in pixel space, seeded by pretrain.seed."""
    torch.manual_seed(p.seed)
    unet = build_scratch_unet(channels, resolution, text_dim, training_params(p), image_condition=False,
                              pooled_text=p.pooled_text)
    scheduler = scratch_noise_scheduler(training_params(p), prediction_type=p.prediction_type)
    return Denoiser(unet.to(device), scheduler, PixelCodec(channels))


def train_checker(pixels: torch.Tensor, labels: list[str], classes: list[str], seed: int,
                  epochs: int = 6) -> torch.nn.Module:
    """The self-check's judge: the small CNN trained on the corpus's own labels (seeded, CPU-sized)."""
    torch.manual_seed(seed)
    model = SmallCNN(pixels.shape[1], len(classes)).to(pixels.device)
    targets = torch.tensor([classes.index(label) for label in labels], device=pixels.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(pixels), generator=generator)
        for start in range(0, len(pixels), 128):
            batch = order[start : start + 128]
            loss = F.cross_entropy(model(pixels[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(checker: torch.nn.Module, pixels: torch.Tensor, labels: list[str], classes: list[str]) -> float:
    """The share of images the checker reads as their label."""
    targets = torch.tensor([classes.index(label) for label in labels], device=pixels.device)
    predicted = torch.cat([checker(pixels[i : i + 256]).argmax(1) for i in range(0, len(pixels), 256)])
    return float((predicted == targets).float().mean())


def sample_text_to_image(denoiser: Denoiser, texts: np.ndarray, null: np.ndarray, guidance: float, steps: int,
                         seed: int, batch_size: int = 256, precision: str = "no") -> torch.Tensor:
    """Text-to-image samples in [-1, 1] (float32), one per text, DDIM with classifier-free guidance, from seeded
    noise; precision bf16 runs the U-Net under bfloat16 autocast (pretrain.check_precision), its weights untouched."""
    from mvcaug.core.devices import autocast
    from mvcaug.method.sampling import sample

    device = next(denoiser.unet.parameters()).device
    size = denoiser.unet.config.sample_size
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(texts), denoiser.codec.latent_channels, size, size), generator=generator)
    null_text = torch.from_numpy(np.asarray(null, np.float32))[None].to(device)
    out = []
    for start in range(0, len(texts), batch_size):
        text = torch.from_numpy(np.asarray(texts[start : start + batch_size], np.float32)).to(device)
        with autocast(device, precision):
            images = sample(denoiser, None, text, null_text, noise[start : start + batch_size].to(device), "ddim",
                            steps, guidance)
        out.append(images.clamp(-1, 1).cpu())  # float32 already: sample decodes to it
    return torch.cat(out)


@dataclass(frozen=True)
class SelfCheck:
    """One point of the self-check curve."""

    step: int
    seconds: float
    heldout_accuracy: float  # the checker on held-out corpus renders
    sample_accuracy: float  # the checker on the model's samples, against the glyph their caption asked for
    ratio_needed: float

    @property
    def ratio(self) -> float:
        return self.sample_accuracy / self.heldout_accuracy if self.heldout_accuracy else 0.0

    @property
    def passed(self) -> bool:
        # compared as a product: 0.72 / 0.8 is 0.8999... in floating point, yet 0.72 is 90% of 0.8
        return self.sample_accuracy >= self.ratio_needed * self.heldout_accuracy - 1e-12 and self.heldout_accuracy > 0
