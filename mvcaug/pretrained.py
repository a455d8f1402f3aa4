"""A pretrained Stable Diffusion used alone, text-to-image: the paper's baseline for general datasets.

Its U-Net has no image channels, so sampling runs plain classifier-free guidance from the MVC
embeddings (which must come from the same checkpoint's text encoder).
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from mvcaug.codecs import load_vae_codec
from mvcaug.denoiser import Denoiser, load_pretrained_unet
from mvcaug.model_sources import ModelError


def load_text_to_image(path: str, device: torch.device, dtype: torch.dtype = torch.float32) -> Denoiser:
    """unet/, vae/ and scheduler/ of a Stable Diffusion checkpoint, as a Denoiser without conditioning."""
    if not path:
        raise ModelError("generate.mode=pretrained needs finetune.pretrained: a Stable Diffusion folder or hub id")
    unet = load_pretrained_unet(path).to(device, dtype).eval()
    codec = load_vae_codec(path, device, dtype)
    scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
    return Denoiser(unet, scheduler, codec)


def takes_image_condition(denoiser: Denoiser) -> bool:
    """True for our InstructPix2Pix-style U-Net, whose input is [z_t, condition latent]."""
    return denoiser.unet.config.in_channels == 2 * denoiser.codec.latent_channels
