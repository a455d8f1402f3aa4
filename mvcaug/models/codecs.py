"""Latent codecs between images in [-1, 1] and the denoiser's space.

PixelCodec is the identity (the embedded default diffuses pixels); VaeCodec wraps Stable Diffusion's
AutoencoderKL. Both expose the same three calls, so training and generation never branch on them.
"""

from __future__ import annotations

from typing import Protocol

import torch

__all__ = ["Codec", "PixelCodec", "VaeCodec", "LatentCache"]


class Codec(Protocol):
    latent_channels: int
    downscale: int

    def encode_target(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z0: the latent that is noised and denoised."""

    def encode_condition(self, images: torch.Tensor) -> torch.Tensor:
        """The conditioning latent concatenated to z_t (the distribution's mode for a VAE)."""

    def encode_start(self, images: torch.Tensor) -> torch.Tensor:
        """z0 of an image without sampling (the scaled mode for a VAE): where generation with strength < 1 starts."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Back to images in [-1, 1]."""

    def config(self) -> dict:
        """What codec.json stores: enough for mvcaug.io.models.load_codec to rebuild it."""


class PixelCodec:
    """No autoencoder: latents are the pixels themselves."""

    downscale = 1

    def __init__(self, channels: int):
        self.latent_channels = channels

    def encode_target(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return images

    def encode_condition(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def encode_start(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1, 1)

    def config(self) -> dict:
        return {"kind": "pixel", "channels": self.latent_channels}


class VaeCodec:
    """Stable Diffusion's AutoencoderKL: z0 is a scaled sample, the condition the unscaled mode
    (as InstructPix2Pix). Grayscale datasets go in as three equal channels and come out averaged."""

    def __init__(self, vae, source: str, channels: int = 3):
        self.vae = vae.eval().requires_grad_(False)
        self.source = source
        self.channels = channels
        self.latent_channels = int(vae.config.latent_channels)
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling = float(vae.config.scaling_factor)

    def _to_vae(self, images: torch.Tensor) -> torch.Tensor:
        wanted = int(self.vae.config.in_channels)
        if images.shape[1] != wanted:
            images = images.mean(1, keepdim=True).expand(-1, wanted, -1, -1)
        return images.to(self.vae.device, self.vae.dtype)

    @torch.no_grad()
    def encode_target(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        dist = self.vae.encode(self._to_vae(images)).latent_dist
        return dist.sample(generator) * self.scaling

    @torch.no_grad()
    def encode_condition(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(self._to_vae(images)).latent_dist.mode()

    @torch.no_grad()
    def encode_distribution(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the latent distribution: what encode_target samples from and encode_condition
        takes the mode (the mean) of, so a training set encoded once serves every step (LatentCache)."""
        dist = self.vae.encode(self._to_vae(images)).latent_dist
        return dist.mean, dist.std

    @torch.no_grad()
    def encode_start(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(self._to_vae(images)).latent_dist.mode() * self.scaling

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode(latents.to(self.vae.dtype) / self.scaling).sample.clamp(-1, 1)
        return images.mean(1, keepdim=True) if self.channels == 1 and images.shape[1] != 1 else images

    def config(self) -> dict:
        return {"kind": "vae", "source": self.source, "channels": self.channels}


class LatentCache:
    """Every training image's latent distribution, encoded through the VAE once before fine-tuning.

    Encoding each batch's targets and conditions anew would run the frozen VAE encoder twice per sample
    per step, for the same few hundred images; sampling z0 from the cached (mean, std) with the run's
    generator draws exactly what the VAE's own DiagonalGaussianDistribution.sample would. With the pixel
    codec the images are the latents. Kept in CPU memory (pinned on CUDA) and moved per batch.
    """

    def __init__(self, codec: Codec, images: torch.Tensor, batch_size: int = 32):
        self.codec = codec
        self.images = images
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        if isinstance(codec, VaeCodec):
            parts = [codec.encode_distribution(images[start : start + batch_size])
                     for start in range(0, len(images), batch_size)]
            pin = images.is_pinned()
            self.mean = torch.cat([m.cpu() for m, _ in parts])
            self.std = torch.cat([s.cpu() for _, s in parts])
            if pin:
                self.mean, self.std = self.mean.pin_memory(), self.std.pin_memory()

    def targets(self, indices, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """z0 of these training images: a sample of their latent distributions (scaled), or the pixels."""
        if self.mean is None or self.std is None:
            return self.images[indices].to(device, non_blocking=True)
        from diffusers.utils.torch_utils import randn_tensor

        mean = self.mean[indices].to(device, non_blocking=True)
        std = self.std[indices].to(device, non_blocking=True)
        noise = randn_tensor(mean.shape, generator=generator, device=device, dtype=mean.dtype)
        assert isinstance(self.codec, VaeCodec)  # only a VaeCodec fills mean and std (__init__)
        return (mean + std * noise) * self.codec.scaling

    def conditions(self, indices, device: torch.device) -> torch.Tensor:
        """The conditioning latents of these training images: the distributions' modes, or the pixels."""
        if self.mean is None:
            return self.images[indices].to(device, non_blocking=True)
        return self.mean[indices].to(device, non_blocking=True)
