"""Augmentation baselines on [-1, 1] float batches: shapes, ranges, per-image randomness, seeds."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from mvcaug.judging.augment import BASELINES, BaselineAugmentation, from_uint8, random_crop, to_uint8

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
    out = BaselineAugmentation(name, SIZE, flip=True)(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= -1 and out.max() <= 1


def test_a_seed_makes_a_batch_reproducible():
    batch, augment = image_batch(6, 3), BaselineAugmentation("trivialaugment", SIZE, flip=True)
    torch.manual_seed(7)
    first = augment(batch)
    torch.manual_seed(7)
    assert torch.equal(augment(batch), first)


def test_each_image_draws_its_own_crop():
    same = image_batch(1, 1).expand(16, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = BaselineAugmentation("default", SIZE, flip=False)(same)
    distinct = {tuple(image.flatten().tolist()) for image in out}
    assert len(distinct) > 4  # 25 possible crops: identical outputs for all would mean one shared draw


def test_the_batched_crop_is_torchvisions_reflect_padded_crop():
    """Every output is one of the (2p + 1)^2 crops that v2.RandomCrop(padding_mode="reflect") can give."""
    batch = image_batch(8, 3)
    torch.manual_seed(0)
    out = random_crop(batch, SIZE // 8)
    padded = v2.Pad(SIZE // 8, padding_mode="reflect")(batch)
    for image, source in zip(out, padded):
        crops = [source[:, y : y + SIZE, x : x + SIZE] for y in range(5) for x in range(5)]
        assert any(torch.equal(image, crop) for crop in crops)


def test_flips_only_when_asked():
    batch = image_batch(64, 1)
    torch.manual_seed(0)
    flipped = BaselineAugmentation("default", SIZE, flip=True)(batch)
    torch.manual_seed(0)
    plain = BaselineAugmentation("default", SIZE, flip=False)(batch)
    mirrored = [torch.equal(a, b.flip(-1)) and not torch.equal(a, b) for a, b in zip(flipped, plain)]
    assert 16 < sum(mirrored) < 48  # about half of the images, each with the same crop as unflipped


def test_autoaugment_changes_pixels():
    augment = BaselineAugmentation("autoaugment", SIZE, flip=False)
    assert isinstance(augment.policy, v2.AutoAugment) and augment.policy.policy == v2.AutoAugmentPolicy.CIFAR10
    batch = image_batch(8, 3)
    torch.manual_seed(0)
    policy_only = from_uint8(torch.stack([augment.policy(image) for image in to_uint8(batch)]))
    assert not torch.equal(policy_only, batch)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError) as error:
        BaselineAugmentation("mixup", SIZE, flip=False)
    assert "mixup" in str(error.value) and all(name in str(error.value) for name in BASELINES)
