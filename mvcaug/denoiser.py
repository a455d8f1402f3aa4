"""The conditional denoiser: a diffusers UNet2DConditionModel that sees [noisy latent, condition latent].

Two seams keep the embedded default and Stable Diffusion on one code path: where the initial
weights come from (a small U-Net built from a config, or a pretrained one with `conv_in` widened
InstructPix2Pix-style), and the latent codec (see codecs.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from mvcaug.codecs import Codec, load_codec, save_codec_config
from mvcaug.params import FinetuneParams

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """A model folder cannot be loaded; the message says which and how to provide it."""


@dataclass
class Denoiser:
    """The U-Net, its noise schedule and the codec between images and latents."""

    unet: UNet2DConditionModel
    noise_scheduler: DDPMScheduler
    codec: Codec


def build_scratch_unet(
    latent_channels: int, sample_size: int, cross_attention_dim: int, params: FinetuneParams
) -> UNet2DConditionModel:
    """A small U-Net for the embedded default: attention only at the lower resolutions, for speed."""
    levels = len(params.block_out_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1)
    up = ("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",)
    groups = min(8, *params.block_out_channels)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=2 * latent_channels,
        out_channels=latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(params.block_out_channels),
        layers_per_block=params.layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=params.attention_head_dim,
        norm_num_groups=groups,
    )


def scratch_noise_scheduler(params: FinetuneParams) -> DDPMScheduler:
    """Cosine schedule: better than SD's scaled-linear one for small pixel-space models."""
    return DDPMScheduler(
        num_train_timesteps=params.num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
    )


def expand_conv_in(unet: UNet2DConditionModel, extra_channels: int) -> UNet2DConditionModel:
    """Widen conv_in for the concatenated condition latent; new weights are zero (InstructPix2Pix),
    so the widened model's output equals the pretrained model's whatever the condition."""
    old = unet.conv_in
    new = torch.nn.Conv2d(
        old.in_channels + extra_channels, old.out_channels, old.kernel_size, old.stride, old.padding
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=old.in_channels + extra_channels)
    return unet


def load_pretrained_unet(path: str) -> UNet2DConditionModel:
    """The unet/ subfolder of a Stable Diffusion checkpoint (folder or hub id), safetensors only."""
    try:
        return UNet2DConditionModel.from_pretrained(path, subfolder="unet", use_safetensors=True)
    except (OSError, ValueError) as err:
        raise ModelError(
            f"cannot load the U-Net of '{path}': {err}. Offline, set finetune.pretrained to a local "
            "Stable Diffusion folder (unet/, vae/, scheduler/, text_encoder/, tokenizer/)."
        ) from err


def save_denoiser(denoiser: Denoiser, folder: str | Path) -> None:
    """unet/ (safetensors + config.json), scheduler/ and codec.json: all a generator needs."""
    folder = Path(folder)
    denoiser.unet.save_pretrained(folder / "unet", safe_serialization=True)
    denoiser.noise_scheduler.save_pretrained(folder / "scheduler")
    save_codec_config(denoiser.codec, folder / "codec.json")


def load_denoiser(folder: str | Path, device: torch.device, dtype: torch.dtype = torch.float32) -> Denoiser:
    """Load what save_denoiser wrote."""
    folder = Path(folder)
    if not (folder / "unet" / "config.json").is_file():
        raise ModelError(f"{folder}: no fine-tuned model (unet/config.json); run the finetune stage first")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True, torch_dtype=dtype)
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    codec = load_codec(folder / "codec.json", device, dtype)
    return Denoiser(unet.to(device).eval(), scheduler, codec)
