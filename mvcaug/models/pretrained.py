"""The pretrained Stable Diffusion checkpoint's own parts: used alone, text-to-image (the paper's baseline
for general datasets), and copied beside a fine-tuned U-Net so that diffusers' stock pipeline loads it.

Its U-Net has no image channels, so text-to-image sampling runs plain classifier-free guidance from the
MVC embeddings (which must come from the same checkpoint's text encoder). Loading and copying the parts is
file work, in mvcaug.io.models (load_text_to_image, save_pipeline_parts).
"""

from __future__ import annotations

from mvcaug.core.params import FinetuneParams

__all__ = ["loads_as_pipeline"]


def loads_as_pipeline(params: FinetuneParams) -> bool:
    """Whether the fine-tuned model is a Stable Diffusion one that diffusers' InstructPix2Pix pipeline can run:
    a pretrained U-Net in its VAE's latent space (the embedded default has no VAE or text encoder)."""
    return params.init == "pretrained" and params.codec == "vae"
