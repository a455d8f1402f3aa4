"""A tiny scratch denoiser, built the way the finetune stage builds one: for sampling and generation tests."""

from __future__ import annotations

import torch


TINY_RES, TINY_TOKENS, TINY_TEXT_DIM = 8, 4, 16
"""The tiny scratch denoiser's resolution, text length m and text width d."""


def tiny_denoiser():
    """A small scratch denoiser (1 channel, 8 px, 16-d text) in eval mode, seeded: for sampling tests."""
    from mvcaug.method.finetune import build_denoiser
    from mvcaug.core.params import FinetuneParams

    torch.manual_seed(0)
    denoiser = build_denoiser(FinetuneParams(block_out_channels=(8, 16), attention_head_dim=4), channels=1,
                              resolution=TINY_RES, text_dim=TINY_TEXT_DIM, device=torch.device("cpu"))
    denoiser.unet.eval()
    return denoiser
