"""Augmentation baselines on [-1, 1] float batches: shapes, ranges, per-image randomness, seeds."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from mvcaug.augment import BASELINES, augment_batch, baseline_transform, from_uint8, to_uint8

torch.set_num_threads(1)

SIZE = 16


def image_batch(n: int, channels: int, seed: int = 0) -> torch.Tensor:
    """8-bit-exact random images in [-1, 1], as read from PNGs."""
    generator = torch.Generator().manual_seed(seed)
    return from_uint8(torch.randint(0, 256, (n, channels, SIZE, SIZE), generator=generator, dtype=torch.uint8))


def test_uint8_conversion_is_lossless_for_8bit_images():
    batch = image_batch(3, 3)
    assert torch.equal(from_uint8(to_uint8(batch)), batch)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", BASELINES)
def test_shape_dtype_and_range_are_kept(name, channels):
    batch = image_batch(4, channels)
    out = augment_batch(batch, baseline_transform(name, SIZE, flip=True))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= -1 and out.max() <= 1


def test_a_seed_makes_a_batch_reproducible():
    batch, transform = image_batch(6, 3), baseline_transform("trivialaugment", SIZE, flip=True)
    torch.manual_seed(7)
    first = augment_batch(batch, transform)
    torch.manual_seed(7)
    assert torch.equal(augment_batch(batch, transform), first)


def test_each_image_draws_its_own_crop():
    same = image_batch(1, 1).expand(16, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = augment_batch(same, baseline_transform("default", SIZE, flip=False))
    distinct = {tuple(image.flatten().tolist()) for image in out}
    assert len(distinct) > 4  # 25 possible crops: identical outputs for all would mean one shared draw


def test_autoaugment_changes_pixels():
    transform = baseline_transform("autoaugment", SIZE, flip=False)
    policy = transform.transforms[-1]
    assert isinstance(policy, v2.AutoAugment) and policy.policy == v2.AutoAugmentPolicy.CIFAR10
    batch = image_batch(8, 3)
    torch.manual_seed(0)
    assert not torch.equal(augment_batch(batch, v2.Compose([policy])), batch)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError) as error:
        baseline_transform("mixup", SIZE, flip=False)
    assert "mixup" in str(error.value) and all(name in str(error.value) for name in BASELINES)
