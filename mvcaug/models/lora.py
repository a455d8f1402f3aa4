"""LoRA fine-tuning of the denoiser with peft: low-rank adapters on the attention projections, conv_in in full.

A full SD 1.5 U-Net fine-tune trains 860 M weights; with LoRA the base stays frozen and only the adapters
(a few MB at rank 8) and `conv_in` train. `conv_in` is trained in full because InstructPix2Pix widens it
for the conditioning latent: its new input channels start at zero and must learn to read the condition.

What is saved is what diffusers' stock loaders read, in a U-Net folder:
- `config.json` + `diffusion_pytorch_model.safetensors`: the widened U-Net with the trained `conv_in` and
  the frozen base weights, without the adapters (`UNet2DConditionModel.from_pretrained` loads it);
- `pytorch_lora_weights.safetensors`: the adapters, written by diffusers' `save_lora_weights` with their
  LoraConfig as metadata (rank, alpha, targets), so `pipe.load_lora_weights(<that folder>)` rebuilds them.
diffusers' LoRA files hold adapter weights only (its loader refuses any key without "lora"), so `conv_in`
cannot travel in the LoRA file: it travels in the U-Net's own weights. The price is a full U-Net file
(3.4 GB in fp32 for SD 1.5) beside the adapters, which is also what lets the folder load in a stock
pipeline at all: the base U-Net has 4 input channels, this one 8. The files are written and read in
mvcaug.io.models (save_lora, merge_lora).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mvcaug.core.params import FinetuneParams

__all__ = ["WEIGHTS", "UNET_WEIGHTS", "add_lora", "is_lora", "base_state", "adapter_metadata"]

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel
    import torch

WEIGHTS = "pytorch_lora_weights.safetensors"
"""diffusers' file name for LoRA weights (LORA_WEIGHT_NAME_SAFE): load_lora_weights finds it by itself."""
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
"""diffusers' file name for a model's own weights (SAFETENSORS_WEIGHTS_NAME)."""


def _adapter(unet: UNet2DConditionModel, rank: int, alpha: float, targets: list[str]) -> None:
    """Add peft LoRA adapters (diffusers' add_adapter), initialised as diffusers' LoRA training scripts do."""
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(
        r=rank, lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int, but only ever divides it
        init_lora_weights="gaussian", target_modules=targets,
    ))


def add_lora(unet: UNet2DConditionModel, params: FinetuneParams) -> None:
    """Freeze the U-Net, add adapters to `finetune.lora_targets` and unfreeze conv_in (in place)."""
    unet.requires_grad_(False)
    _adapter(unet, params.lora_rank, params.lora_alpha, list(params.lora_targets))
    unet.conv_in.requires_grad_(True)


def is_lora(unet: torch.nn.Module) -> bool:
    return bool(getattr(unet, "peft_config", None))


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().cpu().contiguous()


def base_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The U-Net's own weights without the adapters, under the names of a plain U-Net: peft keeps a wrapped
    layer's frozen weight as `<layer>.base_layer.<name>`. conv_in is not wrapped: it is saved as trained."""
    return {name.replace(".base_layer.", "."): _cpu(tensor) for name, tensor in unet.state_dict().items()
            if ".lora_" not in name}


def adapter_metadata(unet: UNet2DConditionModel) -> dict:
    """The adapters' LoraConfig as diffusers stores it in the LoRA file, with sets as sorted lists: diffusers
    would list a set in hash order, which changes from one process to the next, and the file is hashed."""
    config = unet.peft_config["default"].to_dict()
    return {key: sorted(value) if isinstance(value, set) else value for key, value in config.items()}
