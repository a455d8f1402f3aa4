"""Device and dtype choice, in one place so every stage agrees."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """auto picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def auto_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU supports it, else fp16 on GPU, fp32 on CPU."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto follows auto_dtype; an explicit name is taken as it is."""
    if name == "auto":
        return auto_dtype(device)
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
