"""Generate synthetic images in shards: noise + a same-class conditioning image + an MVC embedding.

A shard is one class and one block of image indices. Image i of class y has its own seed, mixed
embedding (i mod N_y) and conditioning image, so a shard's content depends only on its own inputs,
which its digest hashes (with the code that generates it). The generate task stores a shard with
its digest and keeps a stored shard whose digest matches; raising images_per_class only adds
shards.

A task (a WorkUnit) holds several whole shards, of several classes and of every set one model makes (the
MVC set and the unmixed set side by side), and denoises their images together in batches of exactly
generate.batch_size (the last one padded with copies): every U-Net call has one shape, so an image's
pixels do not depend on which shards share its task, and the GPU is never fed a small shard remainder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from PIL import Image

from mvcaug.models.denoiser import Denoiser, takes_image_condition
from mvcaug.io.digests import code_digest
from mvcaug.data.images import ImageSet, resize, to_image
from mvcaug.core.params import GenerateParams
from mvcaug.io.catalog import FILES

if TYPE_CHECKING:
    import torch

__all__ = ["CODE_ENTRIES", "Shard", "ImageSpec", "WorkUnit", "GenerationInputs", "plan_shards", "plan_work",
    "image_specs", "shard_digest", "ShardJob", "render_shards", "denoise", "denoise_items", "tune_denoiser",
    "synthetic_manifest"]

log = logging.getLogger(__name__)

CODE_ENTRIES = ("mvcaug.method.generate",)
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
        return f"{FILES.shard_prefix}{self.label}-{self.block:04d}"


@dataclass(frozen=True)
class ImageSpec:
    """What one synthetic image is made from: enough to regenerate it exactly."""

    index: int
    seed: int
    mixed_id: str
    cond_id: str


@dataclass(frozen=True)
class WorkUnit:
    """What one task generates: whole shards, as (set name, shard) in generation order. The shard stays the
    unit of storage and resume; the unit only decides which shards share batches."""

    items: tuple[tuple[str, Shard], ...]

    @property
    def name(self) -> str:
        """The task run's name: its first shard, and how many more it holds."""
        set_name, first = self.items[0]
        more = f"+{len(self.items) - 1}" if len(self.items) > 1 else ""
        return f"{set_name}-{first.name}{more}"

    @property
    def images(self) -> int:
        return sum(shard.stop - shard.start for _, shard in self.items)


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

    @functools.cached_property
    def cond_rows(self) -> dict[str, int]:
        """Conditioning image id -> its row in cond_images: looked up once per image generated."""
        return {cid: i for i, cid in enumerate(self.cond_images.ids)}

    @functools.cached_property
    def mixed_rows(self) -> dict[str, dict[str, int]]:
        """label -> mixed embedding id -> its row in mixed[label]."""
        return {label: {mid: i for i, mid in enumerate(ids)} for label, ids in self.mixed_ids.items()}


def plan_shards(labels: list[str], params: GenerateParams) -> list[Shard]:
    shards = []
    for label in sorted(set(labels)):
        for block, start in enumerate(range(0, params.images_per_class, params.shard_size)):
            shards.append(Shard(label, block, start, min(start + params.shard_size, params.images_per_class)))
    return shards


def plan_work(shards: dict[str, list[Shard]], model_of: dict[str, str], params: GenerateParams) -> list[WorkUnit]:
    """The shards of every set (set name -> its shards) grouped into tasks of whole shards holding at most
    generate.task_batches x batch_size images (a larger shard gets a task of its own). Only sets made by one
    model (model_of: set name -> model) share a task; within one, a shard of each set comes next to the shards
    of the other sets with the same class and block, and such a group that fits stays in one task, so they share
    batches."""
    capacity = params.batch_size * params.task_batches
    order = {name: i for i, name in enumerate(shards)}
    units: list[WorkUnit] = []
    for model in dict.fromkeys(model_of[name] for name in shards):
        same_block: dict[tuple[str, int], list[tuple[str, Shard]]] = {}
        for name in sorted((n for n in shards if model_of[n] == model), key=order.__getitem__):
            for shard in shards[name]:
                same_block.setdefault((shard.label, shard.block), []).append((name, shard))
        current: list[tuple[str, Shard]] = []
        for key in sorted(same_block):
            group = same_block[key] if WorkUnit(tuple(same_block[key])).images <= capacity else None
            for piece in [group] if group else [[entry] for entry in same_block[key]]:
                if current and WorkUnit(tuple(current + piece)).images > capacity:
                    units.append(WorkUnit(tuple(current)))
                    current = []
                current += piece
        if current:
            units.append(WorkUnit(tuple(current)))
    return units


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


def shard_digest(shard: Shard, specs: list[ImageSpec], inputs: GenerationInputs) -> str:
    """A hash of every input of the shard: model, sampler settings, embeddings, conditioning images."""
    p = inputs.params
    digest = hashlib.sha256()
    settings = (inputs.model_digest, p.scheduler, p.steps, p.guidance_scale, p.image_guidance_scale, p.strength,
                inputs.resolution, shard.label, shard.start, shard.stop, code_digest(CODE_ENTRIES, CODE_LIBRARIES),
                p.compile, p.channels_last, p.fuse_qkv)  # other kernels: pixels may move in the last bits
    digest.update(json.dumps(settings).encode())
    digest.update(np.ascontiguousarray(inputs.null_text, np.float32).tobytes())
    mixed_rows = inputs.mixed_rows[shard.label]
    for spec in specs:
        digest.update(json.dumps(asdict(spec)).encode())
        digest.update(np.ascontiguousarray(inputs.mixed[shard.label][mixed_rows[spec.mixed_id]], np.float32).tobytes())
        if spec.cond_id:
            digest.update(inputs.cond_images.sha256[inputs.cond_rows[spec.cond_id]].encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardJob:
    """A shard to generate now: its images' specs and the inputs of its set."""

    shard: Shard
    specs: list[ImageSpec]
    inputs: GenerationInputs


def render_shard(shard: Shard, specs: list[ImageSpec], inputs: GenerationInputs) -> list[tuple[dict, Image.Image]]:
    """(manifest row, image at the working resolution) for each image of the shard, in index order."""
    return next(render_shards([ShardJob(shard, specs, inputs)]))[1]


def render_shards(jobs: list[ShardJob]) -> Iterator[tuple[ShardJob, list[tuple[dict, Image.Image]]]]:
    """Each job with its (manifest row, image at the working resolution) list in index order, yielded as soon
    as its last image is denoised (so the caller stores it before the next batch). The images of all jobs
    are denoised together in batches of exactly generate.batch_size, the last one padded with copies: across
    shards, classes and sets. The jobs must share the model and the sampler settings."""
    check_batchable(jobs)
    batch_size = jobs[0].inputs.params.batch_size
    queue = [(job, spec) for job in jobs for spec in job.specs]
    rendered: dict[int, list[tuple[dict, Image.Image]]] = {id(job): [] for job in jobs}
    for start in range(0, len(queue), batch_size):
        batch = queue[start : start + batch_size]
        for (job, spec), image in zip(batch, denoise_items(batch, batch_size)):
            row = {"path": f"{job.shard.name}/{job.shard.label}-{spec.index:05d}.png", "label": job.shard.label,
                   "shard": job.shard.name, **asdict(spec)}
            done = rendered[id(job)]
            done.append((row, to_image(image, job.inputs.resolution)))
            if len(done) == len(job.specs):
                yield job, rendered.pop(id(job))


def check_batchable(jobs: list[ShardJob]) -> None:
    """Jobs share batches only with one model and one set of generate params: a programming error otherwise."""
    first = jobs[0].inputs
    for job in jobs[1:]:
        if job.inputs.denoiser is not first.denoiser or job.inputs.params != first.params:
            raise ValueError(f"shard {job.shard.name} cannot share batches with {jobs[0].shard.name}: "
                             "another model or other generate params")


def denoise(specs: list[ImageSpec], label: str, inputs: GenerationInputs) -> torch.Tensor:
    """Images at the model's resolution, in [-1, 1], of one class's specs in one batch of their own size;
    the caller resizes to the working resolution."""
    job = ShardJob(Shard(label, 0, 0, 0), specs, inputs)
    return denoise_items([(job, spec) for spec in specs], len(specs))


def denoise_items(items: list[tuple[ShardJob, ImageSpec]], size: int) -> torch.Tensor:
    """Images at the model's resolution, in [-1, 1], of the items (each with its own set's conditioning
    image, text embedding, null text and noise) denoised in one batch of `size`: padded with copies of the
    last item, so a batch's shape, and hence the kernels it runs (on the CPU some switch at small batch
    sizes), does not depend on how many items there are. Returns the items' images only."""
    import torch
    from mvcaug.method.sampling import sample

    padded = items + [items[-1]] * (size - len(items))
    inputs = items[0][0].inputs
    p, denoiser = inputs.params, inputs.denoiser
    device = next(denoiser.unet.parameters()).device
    codec = denoiser.codec
    latent_size = int(denoiser.unet.config.sample_size)
    cond = None
    if takes_image_condition(denoiser):
        pixels = torch.stack([job.inputs.cond_images.pixels[cond_position(job.inputs, spec.cond_id)]
                              for job, spec in padded])
        cond = resize(pixels, latent_size * codec.downscale).to(device)
    text = torch.from_numpy(np.stack([mixed_embedding(job, spec) for job, spec in padded]))
    null = torch.from_numpy(np.stack([np.asarray(job.inputs.null_text, np.float32) for job, _ in padded])).to(device)
    noise = torch.stack([
        torch.randn(codec.latent_channels, latent_size, latent_size, generator=torch.Generator().manual_seed(s.seed))
        for _, s in padded
    ]).to(device)
    images = sample(denoiser, cond, text.float().to(device), null, noise,
                    p.scheduler, p.steps, p.guidance_scale, p.image_guidance_scale, p.strength)
    return images[: len(items)]


def cond_position(inputs: GenerationInputs, cond_id: str) -> int:
    return inputs.cond_rows[cond_id]


def mixed_embedding(job: ShardJob, spec: ImageSpec) -> np.ndarray:
    return job.inputs.mixed[job.shard.label][job.inputs.mixed_rows[job.shard.label][spec.mixed_id]]


def tune_denoiser(denoiser: Denoiser, params: GenerateParams) -> Denoiser:
    """The denoiser with generate.fuse_qkv, channels_last and compile applied (each off by default). Fusing
    and the memory format change the U-Net in place; compile wraps it (the wrapper keeps its config and
    parameters). Call once per model and process: compilation happens at the first batch."""
    import torch

    unet = denoiser.unet
    if params.fuse_qkv:
        unet.fuse_qkv_projections()
    if params.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    if params.compile:
        unet = torch.compile(unet)
    return Denoiser(unet, denoiser.noise_scheduler, denoiser.codec)


def synthetic_manifest(rows: list[dict]) -> pa.Table:
    """path, label, shard, seed, mixed-embedding id, conditioning image id (plus the image index)."""
    rows = sorted(rows, key=lambda r: (r["label"], r["index"]))
    return pa.table({c: [r[c] for r in rows] for c in MANIFEST_SCHEMA.names}, schema=MANIFEST_SCHEMA)
