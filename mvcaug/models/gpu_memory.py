"""Will a fine-tuning run fit the GPU? An estimate of its peak memory, made before the first step.

Fine-tuning SD 1.5's U-Net (860 M parameters) in full with fp32 AdamW and an EMA copy on the GPU needs
about 14 GB before a single activation is stored, and the activations of a batch come on top: a 24 GB
card fails half-way through its first step, after minutes of loading. The estimate adds what training
keeps resident (weights, gradients, optimizer state, the EMA copy, the frozen VAE) and the activations
that one training sample saves for the backward pass, measured by running that sample through the U-Net
once under autograd's saved-tensor hooks (on the training device, with the run's autocast and gradient
checkpointing), times the batch size. Pure: a module and shapes in, bytes out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch

from mvcaug.core.errors import DeviceError
from mvcaug.core.params import FinetuneParams

__all__ = ["GIB", "optimizer_state_bytes", "optimizer_step_bytes", "activation_bytes_per_sample",
    "estimate_peak_memory", "check_fits"]

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

GIB = 1024**3
HEADROOM_BYTES = GIB
"""What the CUDA context, the allocator's fragmentation and cuDNN's workspaces take beside the tensors."""

KNOBS = ("finetune.batch_size (with gradient_accumulation_steps for the same effective batch)",
         "finetune.gradient_checkpointing: true", "finetune.mixed_precision: bf16", "finetune.ema_device: cpu",
         "finetune.optimizer: adafactor", "finetune.resolution")
"""What lowers the peak, in the order worth trying."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes on the training device at the peak of a step, by what holds them."""

    weights: int
    gradients: int
    optimizer: int
    optimizer_step: int
    """Temporaries of the optimiser's step, beside its state: foreach AdamW builds a list of intermediate
    tensors as large as the weights it updates; fused AdamW none to speak of; Adafactor works a weight at a
    time, a few fp32 copies of the largest one."""
    ema: int
    frozen: int
    activations: int

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def describe(self) -> str:
        parts = ", ".join(f"{f.name} {getattr(self, f.name) / GIB:.2f}" for f in fields(self))
        return f"{self.total / GIB:.2f} GiB ({parts})"


def optimizer_state_bytes(parameters: list[torch.nn.Parameter], optimizer: str) -> int:
    """AdamW keeps two fp32 moments per weight; Adafactor (no first moment) keeps factored second
    moments: a row and a column vector per matrix (transformers' Adafactor factors the last two dims)."""
    if optimizer == "adamw":
        return sum(2 * 4 * p.numel() for p in parameters)
    total = 0
    for p in parameters:
        shape = tuple(p.shape)
        if len(shape) >= 2:
            total += 4 * (math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1])
        else:
            total += 4 * p.numel()
    return total


def optimizer_step_bytes(parameters: list[torch.nn.Parameter], optimizer: str, fused: bool) -> int:
    """Peak temporaries of one optimiser step (see MemoryEstimate.optimizer_step)."""
    if not parameters:
        return 0
    if optimizer == "adamw":
        return 0 if fused else sum(4 * p.numel() for p in parameters)
    return 3 * 4 * max(p.numel() for p in parameters)


def activation_bytes_per_sample(
    unet: UNet2DConditionModel, latent_shape: tuple[int, int, int], text_shape: tuple[int, int],
    mixed_precision: str, gradient_checkpointing: bool,
) -> int:
    """Bytes the U-Net saves for backward on one sample, measured: one forward pass with autograd on, every
    saved tensor's storage counted once, the module's own parameters left out (counted as weights)."""
    device = next(unet.parameters()).device
    owned = {p.untyped_storage().data_ptr() for p in unet.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in owned and storage.device.type != "meta":
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    was_training, was_checkpointing = unet.training, getattr(unet, "is_gradient_checkpointing", False)
    if gradient_checkpointing and hasattr(unet, "enable_gradient_checkpointing"):
        unet.enable_gradient_checkpointing()
    unet.train()
    sample = torch.zeros(1, *latent_shape, device=device, requires_grad=True)
    text = torch.zeros(1, *text_shape, device=device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if mixed_precision == "bf16" else torch.float16)
                if mixed_precision != "no" else torch.autocast(device.type, enabled=False))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast:
            output = unet(sample, torch.tensor([500], device=device), encoder_hidden_states=text).sample
        del output
    finally:
        unet.train(was_training)
        if gradient_checkpointing and not was_checkpointing and hasattr(unet, "disable_gradient_checkpointing"):
            unet.disable_gradient_checkpointing()
    return sum(seen.values())


def estimate_peak_memory(
    unet: UNet2DConditionModel, frozen: list[torch.nn.Module], params: FinetuneParams,
    latent_shape: tuple[int, int, int], text_shape: tuple[int, int], fused_adamw: bool = True,
) -> MemoryEstimate:
    """The run's peak on its device, for `params` (batch size, optimizer, EMA device, precision,
    checkpointing). `frozen`: modules that sit on the device without training (the VAE). `fused_adamw`:
    whether AdamW runs fused, as fine-tuning does on CUDA (mvcaug.method.finetune.adamw_kernel)."""
    trainable = [p for p in unet.parameters() if p.requires_grad]
    every = list(unet.parameters())
    return MemoryEstimate(
        weights=sum(p.numel() * p.element_size() for p in every),
        gradients=sum(4 * p.numel() for p in trainable),
        optimizer=optimizer_state_bytes(trainable, params.optimizer),
        optimizer_step=optimizer_step_bytes(trainable, params.optimizer, fused_adamw),
        ema=4 * sum(p.numel() for p in trainable) if params.ema and params.ema_device == "accelerator" else 0,
        frozen=sum(p.numel() * p.element_size() for module in frozen for p in module.parameters()),
        activations=params.batch_size * activation_bytes_per_sample(
            unet, latent_shape, text_shape, params.mixed_precision, params.gradient_checkpointing),
    )


def check_fits(estimate: MemoryEstimate, capacity_bytes: int, device_name: str) -> None:
    """Stop before training, naming the knobs, when the estimate exceeds the device's memory: a DeviceError, since
    the same params fit a larger GPU."""
    usable = capacity_bytes - HEADROOM_BYTES
    if estimate.total > usable:
        raise DeviceError(
            f"fine-tuning needs about {estimate.describe()} but {device_name} has {capacity_bytes / GIB:.1f} GiB "
            f"({usable / GIB:.1f} usable); lower it with {'; '.join(KNOBS)}"
        )
