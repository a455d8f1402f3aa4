"""The condition-effect probe: how far the text and the conditioning image each move a generated image."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mvcaug.judging.condition_effect import condition_effect, probe_specs
from mvcaug.method.generate import GenerationInputs
from mvcaug.data.images import ImageSet
from mvcaug.core.params import GenerateParams
from tests.tiny_denoiser import TINY_RES, TINY_TEXT_DIM, TINY_TOKENS, tiny_denoiser

RES, M, TEXT_DIM = TINY_RES, TINY_TOKENS, TINY_TEXT_DIM


@pytest.fixture(scope="module")
def inputs() -> GenerationInputs:
    denoiser = tiny_denoiser()
    with torch.no_grad():  # a denoiser that uses both conditions (a fresh one could ignore either)
        for parameter in denoiser.unet.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    labels = ["a", "a", "a", "b", "b"]
    ids = [f"{label}{i}" for i, label in enumerate(labels)]
    generator = torch.Generator().manual_seed(0)
    cond = ImageSet(ids, labels, [""] * 5, torch.rand(5, 1, RES, RES, generator=generator) * 2 - 1)
    rng = np.random.default_rng(0)
    mixed = {label: rng.normal(size=(3, M, TEXT_DIM)).astype(np.float32) * 3 for label in "ab"}
    return GenerationInputs(denoiser, "tiny", cond, {label: [f"{label}-mix{k}" for k in range(3)] for label in "ab"}, mixed,
                            np.zeros((M, TEXT_DIM), np.float32), RES,
                            GenerateParams(steps=3, guidance_scale=2.0, batch_size=8))


def test_probes_change_one_condition_at_a_time(inputs):
    for base, other_text, other_image in probe_specs(inputs, "a", 3, seed=0):
        assert base.seed == other_text.seed == other_image.seed  # same noise
        assert other_text.cond_id == base.cond_id and other_text.mixed_id != base.mixed_id
        assert other_image.mixed_id == base.mixed_id and other_image.cond_id != base.cond_id
        assert base.cond_id.startswith("a") and other_image.cond_id.startswith("a")


def test_both_changes_are_measured_and_vanish_when_the_condition_is_the_same(inputs):
    effect = condition_effect(inputs, probes_per_class=2)
    assert effect["probes"] == 4.0  # two classes x two probes
    assert effect["text_change"] > 0 and effect["image_change"] > 0
    assert effect["text_to_image_ratio"] == pytest.approx(effect["text_change"] / effect["image_change"])
    same_text = dataclasses.replace(inputs, mixed={k: np.repeat(v[:1], 3, axis=0) for k, v in inputs.mixed.items()})
    assert condition_effect(same_text)["text_change"] == 0.0
    pixels = inputs.cond_images.pixels.clone()
    pixels[:] = pixels[:1]
    same_image = dataclasses.replace(inputs, cond_images=dataclasses.replace(inputs.cond_images, pixels=pixels))
    assert condition_effect(same_image)["image_change"] == 0.0


def test_a_class_without_two_conditioning_images_is_left_out(inputs):
    one_b = dataclasses.replace(inputs, cond_images=inputs.cond_images.subset([0, 1, 2, 3]))
    assert condition_effect(one_b, probes_per_class=2)["probes"] == 2.0
    assert math.isfinite(condition_effect(one_b)["image_change"])
