"""LoRA fine-tuning of the denoiser with peft: low-rank adapters on the attention projections, conv_in in full.

A full SD 1.5 U-Net fine-tune trains 860 M weights and saves 3.4 GB; with LoRA the base stays frozen and
only the adapters (a few MB at rank 8) and `conv_in` train. `conv_in` is trained in full because
InstructPix2Pix widens it for the conditioning latent: its new input channels start at zero and must learn
to read the condition. What is saved is that trained part alone, as safetensors, with a `lora.json` that
names the base checkpoint; loading rebuilds the base, widens it, adds the adapters and merges them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mvcaug.params import FinetuneParams

WEIGHTS = "lora.safetensors"
CONFIG = "lora.json"
FULLY_TRAINED = ("conv_in.",)
"""Modules trained in full beside the adapters: the widened input convolution."""


def _adapter(unet: torch.nn.Module, rank: int, alpha: float, targets: list[str]) -> None:
    """Add peft LoRA adapters (diffusers' add_adapter), initialised as diffusers' LoRA training scripts do."""
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets))


def add_lora(unet: torch.nn.Module, params: FinetuneParams) -> None:
    """Freeze the U-Net, add adapters to `finetune.lora_targets` and unfreeze conv_in (in place)."""
    unet.requires_grad_(False)
    _adapter(unet, params.lora_rank, params.lora_alpha, list(params.lora_targets))
    unet.conv_in.requires_grad_(True)


def is_lora(unet: torch.nn.Module) -> bool:
    return bool(getattr(unet, "peft_config", None))


def trained_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights LoRA training changes: the adapters and conv_in, detached, contiguous, on the CPU."""
    return {name: tensor.detach().cpu().contiguous() for name, tensor in unet.state_dict().items()
            if "lora_" in name or name.startswith(FULLY_TRAINED)}


def save_lora(unet: torch.nn.Module, folder: Path, base: str) -> None:
    """folder/lora.safetensors (adapters + conv_in) and folder/lora.json (the base and how to rebuild it)."""
    config = unet.peft_config["default"]
    folder.mkdir(parents=True, exist_ok=True)
    save_file(trained_state(unet), str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps({
        "base": base, "rank": config.r, "alpha": config.lora_alpha, "targets": sorted(config.target_modules),
        "in_channels": unet.config.in_channels, "sample_size": unet.config.sample_size,
    }, indent=2))


def saved_lora(folder: Path) -> dict | None:
    """The lora.json of a saved LoRA denoiser, or None for a fully saved U-Net."""
    return json.loads((folder / CONFIG).read_text()) if (folder / CONFIG).is_file() else None


def load_lora_weights(unet: torch.nn.Module, folder: Path, config: dict) -> torch.nn.Module:
    """Add the saved adapters to a widened base U-Net, load them and conv_in, and merge them into the
    base weights (generation then costs what the full model costs)."""
    _adapter(unet, config["rank"], config["alpha"], config["targets"])
    state = load_file(str(folder / WEIGHTS))
    missing = set(state) - set(unet.state_dict())
    if missing:
        raise ValueError(f"{folder / WEIGHTS}: {len(missing)} tensors match no module of the base U-Net")
    unet.load_state_dict(state, strict=False)
    unet.fuse_lora()
    unet.unload_lora()
    return unet
