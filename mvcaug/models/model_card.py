"""The model card of a fine-tuned model folder (README.md): what it was made from and how to load it.

The card is a DVC output and may be hashed with the folder, so it holds no timestamp, host or absolute
path: the same inputs write the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mvcaug.io.catalog import FILES
from mvcaug.io.digests import json_digest

__all__ = ["CardFacts", "model_card"]


@dataclass(frozen=True)
class CardFacts:
    """What the card states about one fine-tuned model."""

    base: str  # finetune.pretrained; "" when the U-Net was built from scratch
    pipeline: bool  # the folder loads in StableDiffusionInstructPix2PixPipeline (model_index.json and its parts)
    lora: bool  # unet/ carries LoRA adapters beside the weights
    steps: int  # optimiser steps trained
    data: Mapping[str, str]  # digests of the training data (tasks.finetune.data_digests)
    params: Mapping[str, Any]  # the settings the model was made with


def model_card(facts: CardFacts) -> str:
    """README.md text: front matter for the hub's card parser, the provenance, and how to load the folder."""
    tags = ["mvcaug", "instruct-pix2pix", *(["lora"] if facts.lora else [])]
    front = ["---", "library_name: diffusers", *([f"base_model: {facts.base}"] if facts.base else []),
             "pipeline_tag: image-to-image", "tags:", *(f"- {tag}" for tag in tags), "---", ""]
    lines = [
        "# Fine-tuned conditional denoiser (mvcaug)", "",
        "An InstructPix2Pix-style U-Net that sees [noisy latent, conditioning image latent] and a text embedding,",
        "fine-tuned on Mixing-Visual-Concepts embeddings by the `finetune` stage.", "",
        f"- base model: {facts.base or 'none (a small U-Net built from finetune params, init: scratch)'}",
        f"- method: {'LoRA adapters + conv_in in full' if facts.lora else 'every U-Net weight'}",
        f"- steps: {facts.steps}",
        f"- data digest: {json_digest(dict(facts.data))}",
        *(f"  - {name}: {value}" for name, value in sorted(facts.data.items())),
        "", "## Params", "", "```json", json.dumps(facts.params, indent=2, sort_keys=True, default=list), "```", "",
        "## Loading", "", *loading_text(facts),
    ]
    return "\n".join(front + lines) + "\n"


def loading_text(facts: CardFacts) -> list[str]:
    """How to load this folder: with diffusers' stock pipeline when it can, always with mvcaug."""
    ours = [f"With this project: `mvcaug.io.models.load_denoiser(<this folder>, device)` ({FILES.unet}/, "
            f"{FILES.scheduler}/,", f"{FILES.codec}; LoRA adapters merged), sampled by `mvcaug.method.sampling.sample`."]
    if not facts.pipeline:
        why = ("the base checkpoint had no loadable text_encoder/ and tokenizer/ to copy" if facts.base else
               "it has no VAE or text encoder (the embedded default diffuses pixels)")
        return [f"No diffusers pipeline loads this model: {why}. `unet/` alone loads with",
                "`UNet2DConditionModel.from_pretrained(<this folder>, subfolder=\"unet\")`.", "", *ours]
    code = ["```python", "from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline", "",
            "pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(\"<this folder>\")"]
    if facts.lora:
        code.append("pipe.load_lora_weights(\"<this folder>/unet\")  # the adapters (pytorch_lora_weights.safetensors)")
    code += ["pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # as generate.scheduler: ddim",
             "images = pipe(image=condition, prompt_embeds=mix, negative_prompt_embeds=null,",
             "              guidance_scale=2.0, image_guidance_scale=1.0).images  # the paper's Eq. 6", "```"]
    notes = ["The text condition is an MVC embedding (mixed.parquet) or a prompt through the pipeline's text",
             "encoder, which is the base checkpoint's: the two agree when embed.encoder is that checkpoint."]
    if facts.lora:
        notes += ["", "`unet/` holds the widened U-Net with the trained `conv_in` and the frozen base weights; the",
                  "adapters are in `unet/pytorch_lora_weights.safetensors` (diffusers' LoRA format, which holds",
                  "adapters only, hence conv_in in the U-Net). Without `load_lora_weights` the pipeline runs the",
                  "U-Net without its adapters: not the fine-tuned model."]
    return [*code, "", *notes, "", *ours]
