"""Classical augmentation baselines, to compare synthetic images against: torchvision's policies.

Every baseline starts with a random crop after reflect-padding by size // 8 (translations of up to 1/8
of the image), plus horizontal flips when asked (off for chiral classes such as digits); AutoAugment,
RandAugment and TrivialAugment are applied on top of it, as in the papers that introduced them.

The crop and flip are drawn per image but applied to the whole batch at once (one gather), which costs
nothing next to a training step; torchvision's policies are defined on uint8 images and transform one
image at a time (a v2 transform called on a batch would apply one draw to all of it), so only they run
per image, on uint8 copies. Randomness comes from torch's global generator, so torch.manual_seed makes
a batch reproducible. The policies handle one-channel images as they are.
"""

from __future__ import annotations

import typing
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from mvcaug.core.params import Baseline

__all__ = ["BASELINES", "to_uint8", "from_uint8", "random_crop", "BaselineAugmentation"]

BASELINES: tuple[str, ...] = typing.get_args(Baseline)
POLICIES: dict[str, Callable[[], v2.Transform]] = {
    "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
    "randaugment": v2.RandAugment,
    "trivialaugment": v2.TrivialAugmentWide,
}


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats to uint8 [0, 255] (lossless for images read from 8-bit files)."""
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] to float32 in [-1, 1]."""
    return pixels.to(torch.float32) / 127.5 - 1.0


def random_crop(pixels: torch.Tensor, padding: int) -> torch.Tensor:
    """A crop of each image's original size at a uniform random offset of its reflect-padded copy
    (v2.RandomCrop(size, padding, padding_mode="reflect"), drawn per image, applied in one gather)."""
    if padding <= 0:
        return pixels
    n, _, height, width = pixels.shape
    padded = F.pad(pixels, (padding, padding, padding, padding), mode="reflect")
    offsets = torch.randint(0, 2 * padding + 1, (n, 2))
    rows = (offsets[:, 0, None] + torch.arange(height))[:, None, :, None]
    cols = (offsets[:, 1, None] + torch.arange(width))[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(pixels.shape[1])[None, :, None, None], rows, cols]


def random_flip(pixels: torch.Tensor) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    flipped = torch.rand(len(pixels)) < 0.5
    return torch.where(flipped[:, None, None, None], pixels.flip(-1), pixels)


class BaselineAugmentation:
    """The augmentation of one baseline, for float (n, C, size, size) batches in [-1, 1]."""

    def __init__(self, name: str, size: int, flip: bool):
        if name not in BASELINES:
            raise ValueError(f"unknown augmentation {name!r}: use one of {', '.join(BASELINES)}")
        self.name, self.padding, self.flip = name, size // 8, flip
        self.policy = POLICIES[name]() if name in POLICIES else None

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Augment each image independently; same shape and dtype out."""
        if pixels.ndim != 4 or not pixels.is_floating_point():
            raise ValueError(f"expected a float (n, C, H, W) batch, got {pixels.dtype} of shape {tuple(pixels.shape)}")
        out = random_crop(pixels, self.padding)
        if self.flip:
            out = random_flip(out)
        if self.policy is not None and len(out):
            out = from_uint8(torch.stack([self.policy(image) for image in to_uint8(out)])).to(pixels.dtype)
        return out
