"""Denoise from noise with a diffusers scheduler and guidance (Eq. 6, or InstructPix2Pix's two scales)."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from mvcaug.models.denoiser import Denoiser

__all__ = ["sample"]


def make_scheduler(name: str, denoiser: Denoiser):
    """A sampling scheduler sharing the training noise schedule's betas."""
    config = denoiser.noise_scheduler.config
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config)
    raise ValueError(f"unknown scheduler '{name}'; use ddim, dpmsolver++ or unipc")


def guided_noise(
    unet, latents: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, text: torch.Tensor,
    null_text: torch.Tensor, guidance: float, image_guidance: float,
) -> torch.Tensor:
    """Eq. 6: w * eps(z, t, e_T, e_I) + (1 - w) * eps(z, t, null, e_I); with image_guidance != 1 the
    InstructPix2Pix form adds an unconditional-image branch: one batched U-Net call either way.
    cond=None is the pretrained text-to-image model (no image channels): plain classifier-free guidance."""
    null = null_text.expand_as(text)
    if cond is None:
        both = unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([text, null])).sample
        full, text_free = both.chunk(2)
        return guidance * full + (1 - guidance) * text_free
    if image_guidance == 1.0:
        z = torch.cat([latents, latents])
        c = torch.cat([cond, cond])
        e = torch.cat([text, null])
        full, text_free = unet(torch.cat([z, c], 1), t, encoder_hidden_states=e).sample.chunk(2)
        return guidance * full + (1 - guidance) * text_free
    z = torch.cat([latents, latents, latents])
    c = torch.cat([cond, cond, torch.zeros_like(cond)])
    e = torch.cat([text, null, null])
    full, image_only, uncond = unet(torch.cat([z, c], 1), t, encoder_hidden_states=e).sample.chunk(3)
    return uncond + guidance * (full - image_only) + image_guidance * (image_only - uncond)


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    cond_images: torch.Tensor | None,
    text: torch.Tensor,
    null_text: torch.Tensor,
    noise: torch.Tensor,
    scheduler_name: str,
    steps: int,
    guidance: float,
    image_guidance: float = 1.0,
    strength: float = 1.0,
) -> torch.Tensor:
    """Images in [-1, 1] for a batch of (conditioning image, text embedding, initial noise).
    Without conditioning images (None) the U-Net is taken as a plain text-to-image model.

    strength 1.0 starts from pure noise (the paper). Below 1, generation starts from the conditioning
    image's latent noised to that fraction of the schedule and runs only the remaining steps (SDEdit,
    as diffusers' img2img pipelines do): the output stays closer to the conditioning image."""
    unet = denoiser.unet
    dtype = next(unet.parameters()).dtype
    scheduler = make_scheduler(scheduler_name, denoiser)
    scheduler.set_timesteps(steps, device=noise.device)
    cond = None if cond_images is None else denoiser.codec.encode_condition(cond_images).to(dtype)
    timesteps = scheduler.timesteps
    if strength < 1.0 and cond_images is not None:
        start = steps - max(1, min(int(steps * strength), steps))  # at least one denoising step
        timesteps = timesteps[start * scheduler.order :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start * scheduler.order)
        origin = denoiser.codec.encode_start(cond_images).to(noise.device, torch.float32)
        latents = scheduler.add_noise(origin, noise.float(), timesteps[:1].repeat(len(noise))).to(dtype)
    else:
        latents = noise.to(dtype) * scheduler.init_noise_sigma
    text, null_text = text.to(dtype), null_text.to(dtype)
    for t in timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        eps = guided_noise(unet, model_input, t, cond, text, null_text, guidance, image_guidance)
        latents = scheduler.step(eps, t, latents).prev_sample
    return denoiser.codec.decode(latents).float()
