"""A small CNN for low-resolution images: the embedded default's downstream classifier.

Registered with timm as ``small_cnn``: ``timm.create_model("small_cnn", num_classes=10, in_chans=1, width=32)``.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from mvcaug.models.registry import register_project_model

__all__ = ["SmallCNN"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Two conv stages with pooling, a third conv, global average pooling and a linear head."""

    def __init__(self, in_chans: int, num_classes: int, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            _block(in_chans, width), _block(width, width), nn.MaxPool2d(2),
            _block(width, 2 * width), _block(2 * width, 2 * width), nn.MaxPool2d(2),
            _block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# Read by timm's register_model: the model's metadata (no weights). Pixels are in [-1, 1], i.e. timm's
# (x - 0.5) / 0.5 of [0, 1] images; any size works (global pooling), 32 px is the nominal one.
default_cfgs = generate_default_cfgs({
    "small_cnn": {"num_classes": 10, "input_size": (3, 32, 32), "crop_pct": 1.0, "mean": (0.5, 0.5, 0.5),
                  "std": (0.5, 0.5, 0.5), "first_conv": "features.0.0", "classifier": "head.1"},
})


@register_project_model
def small_cnn(pretrained: bool = False, *, width: int = 32, **kwargs: Any) -> SmallCNN:
    """SmallCNN through timm: `width` (channels of the first block) is the model's own setting;
    timm passes num_classes and in_chans (defaults 10 and 3)."""
    return build_model_with_cfg(SmallCNN, "small_cnn", pretrained, width=width, **kwargs)
