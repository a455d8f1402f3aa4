"""The pretrained Stable Diffusion checkpoint's own parts: used alone, text-to-image (the paper's baseline
for general datasets), and copied beside a fine-tuned U-Net so that diffusers' stock pipeline loads it.

Its U-Net has no image channels, so text-to-image sampling runs plain classifier-free guidance from the
MVC embeddings (which must come from the same checkpoint's text encoder).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from mvcaug.io.atomic import replacing_folder, write_text
from mvcaug.models.codecs import load_codec, load_vae_codec
from mvcaug.models.denoiser import Denoiser, load_pretrained, load_pretrained_unet
from mvcaug.models.model_sources import ModelError
from mvcaug.core.params import FinetuneParams

log = logging.getLogger(__name__)

MODEL_INDEX = "model_index.json"
COPIED_PARTS = ("vae", "text_encoder", "tokenizer")
"""The parts of the pretrained checkpoint a fine-tuned model folder holds copies of (fine-tuning leaves them as
they are); unet/ and scheduler/ are the fine-tuned model's own (mvcaug.models.denoiser.save_denoiser)."""


def load_text_to_image(path: str, device: torch.device, dtype: torch.dtype = torch.float32) -> Denoiser:
    """unet/, vae/ and scheduler/ of a Stable Diffusion checkpoint, as a Denoiser without conditioning; a
    folder with codec.json (the pretrain stage's pixel-space model) takes its codec from there instead."""
    if not path:
        raise ModelError("generate.mode=pretrained needs finetune.pretrained: a Stable Diffusion folder or hub id")
    unet = load_pretrained_unet(path).to(device, dtype).eval()
    own_codec = Path(path) / "codec.json"
    codec = load_codec(own_codec, device, dtype) if own_codec.is_file() else load_vae_codec(path, device, dtype)
    scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
    return Denoiser(unet, scheduler, codec)


def save_pipeline_parts(folder: str | Path, denoiser: Denoiser, base: str) -> bool:
    """Make a model folder that save_denoiser wrote loadable by diffusers'
    `StableDiffusionInstructPix2PixPipeline.from_pretrained(folder)`: model_index.json, and vae/,
    text_encoder/ and tokenizer/ of the pretrained checkpoint `base` (finetune.pretrained), saved again with
    save_pretrained as copies (safetensors; about 0.8 GB in fp32 for SD 1.5), not symlinks: the folder stays
    whole when it is moved, exported or the hub cache is cleaned, and DVC drops a symlinked folder from a
    folder output without a word (dvc 3.67). The VAE is the denoiser's own (loaded
    from `base`); no safety checker, as the fine-tuning never had one.

    Returns False, with a warning, when `base` has no loadable text encoder or tokenizer: this runs after
    training, whose model stays whole and usable here without them."""
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    try:
        text_encoder = load_pretrained(
            lambda source, subfolder: CLIPTextModel.from_pretrained(source, subfolder=subfolder, use_safetensors=True),
            base, "text_encoder",
        )
        tokenizer = load_pretrained(CLIPTokenizer.from_pretrained, base, "tokenizer")
    except ModelError as err:
        log.warning("the model folder gets no diffusers pipeline files (model_index.json): %s", err)
        return False
    pipeline = StableDiffusionInstructPix2PixPipeline(
        vae=denoiser.codec.vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=denoiser.unet,
        scheduler=denoiser.noise_scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    for name in COPIED_PARTS:
        with replacing_folder(folder / name) as part:
            getattr(pipeline, name).save_pretrained(part)
    write_text(folder / MODEL_INDEX, pipeline.to_json_string())  # last: the folder loads once it is there
    return True


def remove_pipeline_parts(folder: str | Path) -> None:
    """Remove what save_pipeline_parts wrote (a model without them must not pass for one that has them)."""
    folder = Path(folder)
    (folder / MODEL_INDEX).unlink(missing_ok=True)
    for name in COPIED_PARTS:
        shutil.rmtree(folder / name, ignore_errors=True)


def loads_as_pipeline(params: FinetuneParams) -> bool:
    """Whether the fine-tuned model is a Stable Diffusion one that diffusers' InstructPix2Pix pipeline can run:
    a pretrained U-Net in its VAE's latent space (the embedded default has no VAE or text encoder)."""
    return params.init == "pretrained" and params.codec == "vae"
