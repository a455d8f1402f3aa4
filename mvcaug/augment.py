"""Classical augmentation baselines, to compare synthetic images against: torchvision's policies.

The policies (AutoAugment, RandAugment, TrivialAugment) are defined on uint8 images, while this
project keeps images as float tensors in [-1, 1]; augment_batch converts each image to uint8 and
back, and transforms images one at a time so that every image draws its own random parameters
(a v2 transform called on a batch applies one draw to all of it). The policies handle one-channel
images as they are, so grayscale needs no expansion to RGB.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

BASELINES = ("default", "autoaugment", "randaugment", "trivialaugment")


def baseline_transform(name: str, size: int, flip: bool) -> v2.Transform:
    """The augmentation of one baseline, for uint8 (C, H, W) images of `size` px.

    "default" is a random crop after reflect-padding by size // 8 (translations of up to 1/8 of the
    image), plus horizontal flips when `flip` (off for chiral classes such as digits); the three
    policies are applied on top of it, as in the papers that introduced them.

    Raises:
        ValueError: For a name not in BASELINES.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown augmentation {name!r}: use one of {', '.join(BASELINES)}")
    steps: list[v2.Transform] = [v2.RandomCrop(size, padding=size // 8, padding_mode="reflect")]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if name == "autoaugment":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
    elif name == "randaugment":
        steps.append(v2.RandAugment())
    elif name == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    return v2.Compose(steps)


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats to uint8 [0, 255] (lossless for images read from 8-bit files)."""
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] to float32 in [-1, 1]."""
    return pixels.to(torch.float32) / 127.5 - 1.0


def augment_batch(pixels: torch.Tensor, transform: v2.Transform) -> torch.Tensor:
    """Augment each image of a float (n, C, H, W) batch in [-1, 1] independently.

    Randomness comes from torch's global generator (as in every v2 transform), so torch.manual_seed
    makes a batch reproducible. Returns floats in [-1, 1] of the input's shape and dtype; the
    transform must keep the image size (all baselines do).
    """
    if pixels.ndim != 4 or not pixels.is_floating_point():
        raise ValueError(f"expected a float (n, C, H, W) batch, got {pixels.dtype} of shape {tuple(pixels.shape)}")
    images = to_uint8(pixels)
    out = torch.stack([transform(image) for image in images]) if len(images) else images
    if out.shape != pixels.shape:
        raise ValueError(f"the transform changed the batch shape from {tuple(pixels.shape)} to {tuple(out.shape)}")
    return from_uint8(out).to(pixels.dtype)
