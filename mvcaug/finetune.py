"""Fine-tune the conditional denoiser InstructPix2Pix-style (the paper's Eq. 4).

Each sample: x and x' from the same class; z_t = noised latent of x; input = [z_t, latent of x'];
text = an MVC embedding of the class; loss = ||eps - eps_theta(z_t, t, e_T, e_I)||^2. Conditioning
dropout (text, image, both) teaches the unconditional branches that guidance needs at generation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mvcaug.codecs import PixelCodec, load_vae_codec
from mvcaug.denoiser import (
    Denoiser, build_scratch_unet, expand_conv_in, load_pretrained_unet, scratch_noise_scheduler,
)
from mvcaug.mix import apply_plan, draw_plan
from mvcaug.params import FinetuneParams, MixParams

log = logging.getLogger(__name__)

StepCallback = Callable[[int, float], None]


@dataclass
class ClassConditions:
    """Everything the sampler needs to build (x, x', e_T) for one class."""

    image_indices: np.ndarray  # rows of the training-image tensor
    caption_embeddings: np.ndarray  # (K, m, d), for fresh mixes
    mixed_embeddings: np.ndarray  # (N_y, m, d), for mixes drawn from mixed.parquet


class ConditionSampler:
    """Draws training pairs and text conditions, class by class, from one seeded stream."""

    def __init__(self, classes: dict[str, ClassConditions], mix: MixParams, mode: str, seed: int):
        self.classes = classes
        self.labels = sorted(classes)
        self.mix = mix
        self.mode = mode
        self.rng = np.random.default_rng(seed)

    def text_condition(self, label: str) -> np.ndarray:
        conditions = self.classes[label]
        if self.mode == "table":
            return conditions.mixed_embeddings[self.rng.integers(len(conditions.mixed_embeddings))]
        count, m, d = conditions.caption_embeddings.shape
        plan = draw_plan(self.rng, count, m, d, self.mix.coarse_steps, self.mix.fine_steps)
        return apply_plan(plan, conditions.caption_embeddings)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(target indices, condition indices, text embeddings (size, m, d)) for one step."""
        targets, conds, texts = [], [], []
        for label in self.rng.choice(self.labels, size=size):
            pool = self.classes[label].image_indices
            target, cond = self.rng.choice(pool, size=2, replace=len(pool) < 2)
            targets.append(target)
            conds.append(cond)
            texts.append(self.text_condition(label))
        return np.array(targets), np.array(conds), np.stack(texts)


def build_denoiser(
    params: FinetuneParams, channels: int, resolution: int, text_dim: int, device: torch.device
) -> Denoiser:
    """The initial model: a small pixel-space U-Net, or a pretrained SD U-Net with conv_in widened.
    Seeded here, so finetune.seed fixes the initial weights."""
    torch.manual_seed(params.seed)
    if params.init == "scratch":
        codec = PixelCodec(channels) if params.codec == "pixel" else load_vae_codec(params.pretrained, device)
        size = resolution // codec.downscale
        unet = build_scratch_unet(codec.latent_channels, size, text_dim, params)
        return Denoiser(unet.to(device), scratch_noise_scheduler(params), codec)
    from diffusers import DDPMScheduler

    unet = load_pretrained_unet(params.pretrained)
    codec = load_vae_codec(params.pretrained, device) if params.codec == "vae" else PixelCodec(channels)
    unet = expand_conv_in(unet, codec.latent_channels)
    scheduler = DDPMScheduler.from_pretrained(params.pretrained, subfolder="scheduler")
    return Denoiser(unet.to(device), scheduler, codec)


def dropout_masks(
    size: int, params: FinetuneParams, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep_text, keep_image) per sample: both dropped, text only, image only, as InstructPix2Pix."""
    r = torch.rand(size, generator=generator, device=device)
    both = r < params.both_dropout
    text = (r >= params.both_dropout) & (r < params.both_dropout + params.text_dropout)
    upper = params.both_dropout + params.text_dropout + params.image_dropout
    image = (r >= params.both_dropout + params.text_dropout) & (r < upper)
    return ~(both | text), ~(both | image)


def diffusion_loss(
    denoiser: Denoiser,
    unet: torch.nn.Module,
    target_images: torch.Tensor,
    cond_images: torch.Tensor,
    text: torch.Tensor,
    null_text: torch.Tensor,
    params: FinetuneParams,
    generator: torch.Generator,
) -> torch.Tensor:
    """Eq. 4 with conditioning dropout, on one batch; `unet` may be Accelerate's wrapped denoiser.unet."""
    device = target_images.device
    # 1. Latents: z0 from x, the condition from x'.
    z0 = denoiser.codec.encode_target(target_images, generator)
    cond = denoiser.codec.encode_condition(cond_images)
    # 2. Drop conditions so the unconditional branches are learned.
    keep_text, keep_image = dropout_masks(len(z0), params, generator, device)
    text = torch.where(keep_text[:, None, None], text, null_text.expand_as(text))
    cond = cond * keep_image[:, None, None, None].to(cond.dtype)
    # 3. Noise at a random timestep and predict it.
    noise = torch.randn(z0.shape, generator=generator, device=device, dtype=z0.dtype)
    steps = denoiser.noise_scheduler.config.num_train_timesteps
    t = torch.randint(0, steps, (len(z0),), generator=generator, device=device)
    zt = denoiser.noise_scheduler.add_noise(z0, noise, t)
    unet_input = torch.cat([zt, cond.to(zt.dtype)], dim=1)
    prediction = unet(unet_input, t, encoder_hidden_states=text.to(zt.dtype)).sample
    return F.mse_loss(prediction.float(), noise.float())


def train_denoiser(
    denoiser: Denoiser,
    images: torch.Tensor,
    sampler: ConditionSampler,
    null_text: np.ndarray,
    params: FinetuneParams,
    on_step: StepCallback | None = None,
) -> list[float]:
    """Optimise the U-Net with Accelerate (mixed precision, accumulation on GPU); returns step losses."""
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler

    device = next(denoiser.unet.parameters()).device
    accelerator = Accelerator(cpu=device.type == "cpu")
    torch.manual_seed(params.seed)
    generator = torch.Generator(device=accelerator.device).manual_seed(params.seed)
    optimizer = torch.optim.AdamW(denoiser.unet.parameters(), lr=params.learning_rate, weight_decay=1e-2)
    lr_schedule = get_scheduler(
        "cosine", optimizer, num_warmup_steps=params.lr_warmup_steps, num_training_steps=params.steps
    )
    unet, optimizer, lr_schedule = accelerator.prepare(denoiser.unet, optimizer, lr_schedule)
    images = images.to(accelerator.device)
    null = torch.from_numpy(np.asarray(null_text, np.float32)).to(accelerator.device)[None]
    unet.train()
    losses = []
    for step in tqdm(range(params.steps), desc="finetune", unit="step", mininterval=5):
        targets, conds, texts = sampler.batch(params.batch_size)
        text = torch.from_numpy(texts.astype(np.float32)).to(accelerator.device)
        loss = diffusion_loss(
            denoiser, unet, images[targets], images[conds], text, null, params, generator
        )
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
    denoiser.unet = accelerator.unwrap_model(unet).eval()
    return losses
