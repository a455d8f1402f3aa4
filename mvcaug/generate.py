"""Generate synthetic images in shards: noise + a same-class conditioning image + an MVC embedding.

A shard is one class and one block of image indices. Image i of class y has its own seed, mixed
embedding (i mod N_y) and conditioning image, so a shard's content depends only on its own inputs,
which its fingerprint hashes (with the code that generates it). The generate task stores a shard with
its fingerprint and keeps a stored shard whose fingerprint matches; raising images_per_class only adds
shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import torch

from PIL import Image

from mvcaug.denoiser import Denoiser
from mvcaug.digests import code_digest
from mvcaug.images import ImageSet, resize, to_image
from mvcaug.params import GenerateParams
from mvcaug.pretrained import takes_image_condition
from mvcaug.sampling import sample

log = logging.getLogger(__name__)

SHARD_RECORD = "shard.json"
CODE_ENTRIES = ("mvcaug.generate",)
"""The modules (with their import closure) whose code turns a shard's inputs into images."""
CODE_LIBRARIES = ("torch", "diffusers", "numpy", "pillow")
MANIFEST_SCHEMA = pa.schema([("path", pa.string()), ("label", pa.string()), ("shard", pa.string()),
                             ("index", pa.int64()), ("seed", pa.int64()), ("mixed_id", pa.string()),
                             ("cond_id", pa.string())])


@dataclass(frozen=True)
class Shard:
    """Images [start, stop) of one class."""

    label: str
    block: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"shard-{self.label}-{self.block:04d}"


@dataclass(frozen=True)
class ImageSpec:
    """What one synthetic image is made from: enough to regenerate it exactly."""

    index: int
    seed: int
    mixed_id: str
    cond_id: str


@dataclass
class GenerationInputs:
    """Everything shards are generated from, loaded once per stage."""

    denoiser: Denoiser
    model_digest: str
    cond_images: ImageSet  # the real training images
    mixed_ids: dict[str, list[str]]  # label -> mixed embedding ids, in index order
    mixed: dict[str, np.ndarray]  # label -> (N_y, m, d)
    null_text: np.ndarray  # (m, d)
    resolution: int
    params: GenerateParams


def plan_shards(labels: list[str], params: GenerateParams) -> list[Shard]:
    shards = []
    for label in sorted(set(labels)):
        for block, start in enumerate(range(0, params.images_per_class, params.shard_size)):
            shards.append(Shard(label, block, start, min(start + params.shard_size, params.images_per_class)))
    return shards


def image_specs(shard: Shard, inputs: GenerationInputs) -> list[ImageSpec]:
    """Seeds, mixes and conditioning images of a shard's images, from per-image random streams."""
    pool = inputs.cond_images.of_class(shard.label)
    mixed_ids = inputs.mixed_ids[shard.label]
    if len(pool) == 0 or not mixed_ids:
        raise ValueError(f"class '{shard.label}' has no training images or no mixed embeddings to generate from")
    conditioned = takes_image_condition(inputs.denoiser)
    specs = []
    for index in range(shard.start, shard.stop):
        rng = np.random.default_rng([inputs.params.seed, zlib.crc32(shard.label.encode()), index])
        seed = int(rng.integers(2**31 - 1))
        cond = int(pool[rng.integers(len(pool))])
        cond_id = inputs.cond_images.ids[cond] if conditioned else ""
        specs.append(ImageSpec(index, seed, mixed_ids[index % len(mixed_ids)], cond_id))
    return specs


def shard_fingerprint(shard: Shard, specs: list[ImageSpec], inputs: GenerationInputs) -> str:
    """A hash of every input of the shard: model, sampler settings, embeddings, conditioning images."""
    p = inputs.params
    digest = hashlib.sha256()
    settings = (inputs.model_digest, p.scheduler, p.steps, p.guidance_scale, p.image_guidance_scale, p.strength,
                inputs.resolution, shard.label, shard.start, shard.stop, code_digest(CODE_ENTRIES, CODE_LIBRARIES))
    digest.update(json.dumps(settings).encode())
    digest.update(np.ascontiguousarray(inputs.null_text, np.float32).tobytes())
    position = {cid: i for i, cid in enumerate(inputs.cond_images.ids)}
    mixed_position = {mid: i for i, mid in enumerate(inputs.mixed_ids[shard.label])}
    for spec in specs:
        digest.update(json.dumps(asdict(spec)).encode())
        digest.update(np.ascontiguousarray(
            inputs.mixed[shard.label][mixed_position[spec.mixed_id]], np.float32).tobytes())
        if spec.cond_id:
            digest.update(inputs.cond_images.sha256[position[spec.cond_id]].encode())
    return digest.hexdigest()


def render_shard(shard: Shard, specs: list[ImageSpec], inputs: GenerationInputs) -> list[tuple[dict, Image.Image]]:
    """(manifest row, image at the working resolution) for each image of the shard, in index order."""
    out = []
    for start in range(0, len(specs), inputs.params.batch_size):
        batch = specs[start : start + inputs.params.batch_size]
        for spec, image in zip(batch, denoise(batch, shard.label, inputs)):
            row = {"path": f"{shard.name}/{shard.label}-{spec.index:05d}.png", "label": shard.label,
                   "shard": shard.name, **asdict(spec)}
            out.append((row, to_image(image, inputs.resolution)))
    return out


def denoise(specs: list[ImageSpec], label: str, inputs: GenerationInputs) -> torch.Tensor:
    """Images at the model's resolution, in [-1, 1]; the caller resizes to the working resolution."""
    p, denoiser = inputs.params, inputs.denoiser
    device = next(denoiser.unet.parameters()).device
    codec = denoiser.codec
    latent_size = int(denoiser.unet.config.sample_size)
    cond = None
    if takes_image_condition(denoiser):
        position = {cid: i for i, cid in enumerate(inputs.cond_images.ids)}
        pixels = inputs.cond_images.pixels[[position[s.cond_id] for s in specs]]
        cond = resize(pixels, latent_size * codec.downscale).to(device)
    mixed_position = {mid: i for i, mid in enumerate(inputs.mixed_ids[label])}
    text = torch.from_numpy(np.stack([inputs.mixed[label][mixed_position[s.mixed_id]] for s in specs]))
    null = torch.from_numpy(np.asarray(inputs.null_text, np.float32))[None].to(device)
    noise = torch.stack([
        torch.randn(codec.latent_channels, latent_size, latent_size, generator=torch.Generator().manual_seed(s.seed))
        for s in specs
    ]).to(device)
    return sample(denoiser, cond, text.float().to(device), null, noise,
                  p.scheduler, p.steps, p.guidance_scale, p.image_guidance_scale, p.strength)


def synthetic_manifest(rows: list[dict]) -> pa.Table:
    """path, label, shard, seed, mixed-embedding id, conditioning image id (plus the image index)."""
    rows = sorted(rows, key=lambda r: (r["label"], r["index"]))
    return pa.table({c: [r[c] for r in rows] for c in MANIFEST_SCHEMA.names}, schema=MANIFEST_SCHEMA)
