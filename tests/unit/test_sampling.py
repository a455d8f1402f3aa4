"""Sampling from the conditional denoiser: where generation starts (generate.strength)."""

from __future__ import annotations

import pytest
import torch

from mvcaug.method.sampling import sample
from tests.tiny_denoiser import TINY_RES, TINY_TEXT_DIM, TINY_TOKENS, tiny_denoiser

RES, M, TEXT_DIM = TINY_RES, TINY_TOKENS, TINY_TEXT_DIM


@pytest.fixture(scope="module")
def denoiser():
    return tiny_denoiser()


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cond = torch.rand(3, 1, RES, RES, generator=g) * 2 - 1
    text = torch.randn(3, M, TEXT_DIM, generator=g)
    noise = torch.randn(3, 1, RES, RES, generator=g)
    return cond, text, torch.zeros(1, M, TEXT_DIM), noise


class CountingUNet(torch.nn.Module):
    """The U-Net, counting its calls: one per denoising step (both guidance branches go in one batch)."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.calls, self.config = unet, 0, unet.config

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.unet(*args, **kwargs)


@pytest.mark.parametrize("scheduler", ["ddim", "dpmsolver++", "unipc"])
def test_strength_one_is_the_pure_noise_start(denoiser, scheduler):
    cond, text, null, noise = inputs()
    default = sample(denoiser, cond, text, null, noise, scheduler, 6, 2.0)
    assert torch.equal(sample(denoiser, cond, text, null, noise, scheduler, 6, 2.0, strength=1.0), default)


@pytest.mark.parametrize(("strength", "steps_run"), [(1.0, 10), (0.5, 5), (0.25, 2)])
def test_only_the_remaining_steps_run(denoiser, strength, steps_run):
    counting = denoiser.__class__(CountingUNet(denoiser.unet), denoiser.noise_scheduler, denoiser.codec)
    cond, text, null, noise = inputs()
    sample(counting, cond, text, null, noise, "ddim", 10, 2.0, strength=strength)
    assert counting.unet.calls == steps_run


def test_a_low_strength_stays_close_to_the_conditioning_image(denoiser):
    cond, text, null, noise = inputs()
    distance = {s: (sample(denoiser, cond, text, null, noise, "ddim", 10, 2.0, strength=s) - cond).abs().mean().item()
                for s in (0.1, 1.0)}
    assert distance[0.1] < distance[1.0] / 2


def test_a_tiny_strength_still_denoises_one_step(denoiser):
    counting = denoiser.__class__(CountingUNet(denoiser.unet), denoiser.noise_scheduler, denoiser.codec)
    cond, text, null, noise = inputs()
    sample(counting, cond, text, null, noise, "ddim", 10, 2.0, strength=0.01)
    assert counting.unet.calls == 1
