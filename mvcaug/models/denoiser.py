"""The conditional denoiser: a diffusers UNet2DConditionModel that sees [noisy latent, condition latent].

Two seams keep the embedded default and Stable Diffusion on one code path: where the initial
weights come from (a small U-Net built from a config, or a pretrained one with `conv_in` widened
InstructPix2Pix-style), and the latent codec (see codecs.py). Saving and loading them is mvcaug.io.models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mvcaug.io.model_sources import ModelError
from mvcaug.core.params import FinetuneParams

if TYPE_CHECKING:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from mvcaug.models.codecs import Codec

__all__ = ["Denoiser", "build_scratch_unet", "scratch_noise_scheduler", "takes_image_condition", "expand_conv_in",
    "check_compatible"]


@dataclass
class Denoiser:
    """The U-Net, its noise schedule and the codec between images and latents."""

    unet: UNet2DConditionModel
    noise_scheduler: DDPMScheduler
    codec: Codec


def build_scratch_unet(
    latent_channels: int, sample_size: int, cross_attention_dim: int, params: FinetuneParams,
    image_condition: bool = True, pooled_text: bool = False,
) -> UNet2DConditionModel:
    """A small U-Net for the embedded default: attention only at the lower resolutions, for speed.

    image_condition=False builds a text-to-image U-Net (the pretrain stage's, as Stable Diffusion's own):
    fine-tuning widens its conv_in as it widens SD's. pooled_text adds diffusers' text embedding to the time
    embedding (`addition_embed_type="text"`: an attention pooling of the caption, as SDXL adds its pooled
    text), so every block sees the caption, not only the cross-attention layers."""
    from diffusers import UNet2DConditionModel

    levels = len(params.block_out_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1)
    up = ("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",)
    groups = min(8, *params.block_out_channels)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=(2 if image_condition else 1) * latent_channels,
        out_channels=latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(params.block_out_channels),
        layers_per_block=params.layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=params.attention_head_dim,
        norm_num_groups=groups,
        **({"addition_embed_type": "text"} if pooled_text else {}),
    )


def scratch_noise_scheduler(params: FinetuneParams, prediction_type: str = "epsilon") -> DDPMScheduler:
    """Cosine schedule: better than SD's scaled-linear one for small pixel-space models."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=params.num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
    )


def takes_image_condition(denoiser: Denoiser) -> bool:
    """True for our InstructPix2Pix-style U-Net, whose input is [z_t, condition latent]; False for a
    text-to-image one (a pretrained base, used alone or during pretraining)."""
    return denoiser.unet.config.in_channels == 2 * denoiser.codec.latent_channels


def expand_conv_in(unet: UNet2DConditionModel, extra_channels: int) -> UNet2DConditionModel:
    """Widen conv_in for the concatenated condition latent; new weights are zero (InstructPix2Pix),
    so the widened model's output equals the pretrained model's whatever the condition."""
    import torch

    old = unet.conv_in
    new = torch.nn.Conv2d(
        old.in_channels + extra_channels, old.out_channels, old.kernel_size, old.stride, old.padding
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        assert new.bias is not None  # Conv2d's default bias=True
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=old.in_channels + extra_channels)
    return unet


def check_compatible(unet: UNet2DConditionModel, codec: Codec, text_dim: int, resolution: int) -> None:
    """Fail with the mismatch named rather than with a shape error deep inside the U-Net."""
    if unet.config.in_channels != codec.latent_channels or unet.config.out_channels != codec.latent_channels:
        raise ModelError(
            f"the pretrained U-Net maps {unet.config.in_channels} to {unet.config.out_channels} channels but "
            f"the codec's latents have {codec.latent_channels}; use finetune.codec=vae with a Stable Diffusion U-Net"
        )
    if unet.config.cross_attention_dim != text_dim:
        raise ModelError(
            f"the embeddings have width {text_dim} but the U-Net's cross_attention_dim is "
            f"{unet.config.cross_attention_dim}; embed with the checkpoint's own text encoder "
            "(embed.encoder=<checkpoint>, embed.subfolder=text_encoder, embed.tokenizer_subfolder=tokenizer)"
        )
    if resolution % codec.downscale:
        raise ModelError(f"prepare.resolution {resolution} is not a multiple of the VAE's downscale {codec.downscale}")
