"""Diffusion models in and out of files: a fine-tuned model folder (the denoiser, its codec, LoRA adapters, the
pretrained checkpoint's parts beside them) and a pretrained Stable Diffusion checkpoint (folder or hub id).

The networks themselves are built in mvcaug.models (denoiser, codecs, lora); where a pretrained model comes
from is checked in mvcaug.io.model_sources.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from safetensors.torch import save_file

from mvcaug.io.atomic import replacing_folder, write_json, write_text
from mvcaug.io.catalog import FILES
from mvcaug.io.model_sources import ModelError, load_from_source
from mvcaug.models.codecs import Codec, PixelCodec, VaeCodec
from mvcaug.models.denoiser import Denoiser
from mvcaug.models.lora import UNET_WEIGHTS, WEIGHTS, adapter_metadata, base_state, is_lora

__all__ = ["load_pretrained_unet", "load_pretrained_scheduler", "save_denoiser", "load_denoiser", "load_vae_codec",
    "load_text_to_image", "save_pipeline_parts", "remove_pipeline_parts"]

log = logging.getLogger(__name__)
T = TypeVar("T")


STABLE_DIFFUSION_FOLDER = "a Stable Diffusion folder (unet/, vae/, scheduler/, text_encoder/, tokenizer/) or a hub id"


def load_pretrained(load: Callable[..., T], path: str, part: str) -> T:
    """`load(source, subfolder=part)` from finetune.pretrained, failures named (mvcaug.io.model_sources)."""
    return load_from_source(load, path, "finetune.pretrained", STABLE_DIFFUSION_FOLDER, subfolder=part)


def load_pretrained_unet(path: str) -> UNet2DConditionModel:
    """The unet/ subfolder of a Stable Diffusion checkpoint (folder or hub id), safetensors only."""
    return load_pretrained(
        lambda source, subfolder: UNet2DConditionModel.from_pretrained(
            source, subfolder=subfolder, use_safetensors=True
        ),
        path, FILES.unet,
    )


def load_pretrained_scheduler(path: str) -> DDPMScheduler:
    """The training noise schedule of the checkpoint (scheduler/), as a DDPMScheduler."""
    return load_pretrained(DDPMScheduler.from_pretrained, path, FILES.scheduler)


def drop_source_path(folder: Path) -> None:
    """Remove `_name_or_path` from the config.json that save_pretrained wrote in `folder`: a model loaded with
    from_pretrained records where it was loaded from (an absolute path in this checkout), so two clones of one
    commit, or a moved checkout, wrote byte-identical weights beside different configs; DVC then called the model
    changed, and every shard digest that covers the model folder went stale with it."""
    config = folder / "config.json"
    if not config.is_file():
        return
    values = json.loads(config.read_text())
    if values.pop("_name_or_path", None) is not None:
        write_text(config, json.dumps(values, indent=2, sort_keys=True) + "\n")  # as diffusers writes it


def save_denoiser(denoiser: Denoiser, folder: str | Path) -> None:
    """unet/ (safetensors + config.json; for a LoRA U-Net the U-Net without adapters, conv_in as trained,
    and the adapters in diffusers' LoRA file beside it: mvcaug.models.lora), scheduler/ and codec.json: all a
    generator needs. unet/ and scheduler/ are what diffusers' from_pretrained reads, so with the parts of
    the pretrained checkpoint beside them (save_pipeline_parts) the folder loads in
    StableDiffusionInstructPix2PixPipeline."""
    folder = Path(folder)
    with replacing_folder(folder / FILES.unet) as unet_folder:  # no file of an earlier full or LoRA save stays
        if is_lora(denoiser.unet):
            save_lora(denoiser.unet, unet_folder)
        else:
            denoiser.unet.save_pretrained(unet_folder, safe_serialization=True)
        drop_source_path(Path(unet_folder))
    with replacing_folder(folder / FILES.scheduler) as scheduler_folder:
        denoiser.noise_scheduler.save_pretrained(scheduler_folder)
    save_codec_config(denoiser.codec, folder / FILES.codec)


def load_denoiser(folder: str | Path, device: torch.device, dtype: torch.dtype = torch.float32) -> Denoiser:
    """Load what save_denoiser wrote; LoRA adapters are loaded as diffusers' load_lora_weights loads them and
    merged in float32 before the U-Net takes `dtype`."""
    folder = Path(folder)
    if not (folder / FILES.unet / "config.json").is_file():
        raise ModelError(f"{folder}: no fine-tuned model ({FILES.unet}/config.json); run the finetune stage first")
    if has_lora(folder / FILES.unet):
        unet = UNet2DConditionModel.from_pretrained(folder / FILES.unet, use_safetensors=True)
        unet = merge_lora(unet, folder / FILES.unet)
        unet = unet if dtype == unet.dtype else unet.to(dtype)
    else:
        unet = UNet2DConditionModel.from_pretrained(folder / FILES.unet, use_safetensors=True, torch_dtype=dtype)
    scheduler = DDPMScheduler.from_pretrained(folder / FILES.scheduler)
    codec = load_codec(folder / FILES.codec, device, dtype)
    return Denoiser(unet.to(device).eval(), scheduler, codec)


def load_vae_codec(
    source: str, device: torch.device, dtype: torch.dtype = torch.float32, channels: int = 3
) -> VaeCodec:
    """The vae/ subfolder of a Stable Diffusion checkpoint (folder or hub id)."""
    from diffusers import AutoencoderKL

    vae = load_from_source(
        lambda path, subfolder: AutoencoderKL.from_pretrained(
            path, subfolder=subfolder, use_safetensors=True, torch_dtype=dtype
        ),
        source, "finetune.pretrained", "a Stable Diffusion folder with vae/, or a hub id", subfolder="vae",
    )
    return VaeCodec(vae.to(device), source, channels)


def save_codec_config(codec: Codec, path: Path) -> None:
    write_json(path, codec.config())


def load_codec(path: Path, device: torch.device, dtype: torch.dtype = torch.float32) -> Codec:
    config = json.loads(Path(path).read_text())
    if config["kind"] == "pixel":
        return PixelCodec(int(config["channels"]))
    return load_vae_codec(config["source"], device, dtype, int(config.get("channels", 3)))


def save_lora(unet: UNet2DConditionModel, folder: Path) -> None:
    """folder/config.json + diffusion_pytorch_model.safetensors (the U-Net without adapters, conv_in as
    trained) and folder/pytorch_lora_weights.safetensors (the adapters, diffusers' save_lora_weights)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from peft.utils import get_peft_model_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    unet.save_config(folder)
    save_file(base_state(unet), str(folder / UNET_WEIGHTS), metadata={"format": "pt"})
    adapters = {name: tensor.detach().cpu().contiguous() for name, tensor in get_peft_model_state_dict(unet, adapter_name="default").items()}
    StableDiffusionInstructPix2PixPipeline.save_lora_weights(
        folder, unet_lora_layers=adapters, unet_lora_adapter_metadata=adapter_metadata(unet), weight_name=WEIGHTS,
        safe_serialization=True,
    )


def has_lora(folder: Path) -> bool:
    """Whether a saved U-Net folder carries LoRA adapters beside its weights."""
    return (Path(folder) / WEIGHTS).is_file()


def merge_lora(unet: UNet2DConditionModel, folder: Path) -> UNet2DConditionModel:
    """Load the adapters saved in `folder` into `unet` the way `pipe.load_lora_weights` does (diffusers'
    StableDiffusionLoraLoaderMixin, safetensors only) and merge them into its weights, so generation then
    costs what the full model costs."""
    from diffusers import StableDiffusionInstructPix2PixPipeline as Pipeline

    state, alphas, metadata = Pipeline.lora_state_dict(
        str(folder), weight_name=WEIGHTS, use_safetensors=True, return_lora_metadata=True
    )
    Pipeline.load_lora_into_unet(state, alphas, unet, metadata=metadata)
    unet.fuse_lora()
    unet.unload_lora()
    return unet


MODEL_INDEX = "model_index.json"
COPIED_PARTS = ("vae", "text_encoder", "tokenizer")
"""The parts of the pretrained checkpoint a fine-tuned model folder holds copies of (fine-tuning leaves them as
they are); unet/ and scheduler/ are the fine-tuned model's own (save_denoiser)."""


def load_text_to_image(path: str, device: torch.device, dtype: torch.dtype = torch.float32) -> Denoiser:
    """unet/, vae/ and scheduler/ of a Stable Diffusion checkpoint, as a Denoiser without conditioning; a
    folder with codec.json (the pretrain stage's pixel-space model) takes its codec from there instead."""
    if not path:
        raise ModelError("generate.mode=pretrained needs finetune.pretrained: a Stable Diffusion folder or hub id")
    unet = load_pretrained_unet(path).to(device, dtype).eval()
    own_codec = Path(path) / FILES.codec
    codec = load_codec(own_codec, device, dtype) if own_codec.is_file() else load_vae_codec(path, device, dtype)
    scheduler = DDPMScheduler.from_pretrained(path, subfolder=FILES.scheduler)
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
    assert isinstance(denoiser.codec, VaeCodec)  # loads_as_pipeline: finetune.codec is vae
    pipeline = StableDiffusionInstructPix2PixPipeline(
        vae=denoiser.codec.vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=denoiser.unet,
        scheduler=denoiser.noise_scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    for name in COPIED_PARTS:
        with replacing_folder(folder / name) as part:
            getattr(pipeline, name).save_pretrained(part)
            drop_source_path(Path(part))
    write_text(folder / MODEL_INDEX, pipeline.to_json_string())  # last: the folder loads once it is there
    return True


def remove_pipeline_parts(folder: str | Path) -> None:
    """Remove what save_pipeline_parts wrote (a model without them must not pass for one that has them)."""
    folder = Path(folder)
    (folder / MODEL_INDEX).unlink(missing_ok=True)
    for name in COPIED_PARTS:
        shutil.rmtree(folder / name, ignore_errors=True)
