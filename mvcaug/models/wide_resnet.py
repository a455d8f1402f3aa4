"""Wide-ResNet-28-k for 32 px images (Zagoruyko & Komodakis, 2016).

timm's wide ResNets are ImageNet networks (7x7 stem, bottlenecks); the CIFAR-style WRN-28-k used as a
standard small-data baseline is not in timm, so it is defined here, following the paper's layout:
a 3x3 stem of 16 channels, three groups of pre-activation basic blocks of widths 16k, 32k and 64k
(strides 1, 2, 2), and BN-ReLU, global average pooling and a linear head.

Registered with timm as ``wrn28_2`` and ``wrn28_10``:
``timm.create_model("wrn28_2", num_classes=10, in_chans=3, drop_rate=0.3)``.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from mvcaug.models.registry import register_project_model

__all__ = ["wide_resnet28"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3, plus an identity or 1x1-conv shortcut.

    When the shape changes, the shortcut takes the pre-activated input, as in the reference
    implementation, so both branches see normalised features.
    """

    def __init__(self, in_chans: int, out_chans: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chans)
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_chans != out_chans:
            self.shortcut = nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        return out + residual


class WideResNet(nn.Module):
    """Wide-ResNet-d-k: (d - 4) / 6 blocks per group; `head` is the classifier (dropped on reload).

    Args:
        depth: Total depth d; d - 4 must be divisible by 6 (28 gives 4 blocks per group).
        width: Widening factor k.
        num_classes: Size of the linear head.
        in_chans: Input channels (1 for grayscale, 3 for RGB).
        drop_rate: Dropout between the two convolutions of every block (the paper uses 0.3 on CIFAR).
    """

    def __init__(self, depth: int, width: int, num_classes: int, in_chans: int = 3, drop_rate: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"Wide-ResNet depth must be 6n + 4 with n >= 1, got {depth}")
        if width < 1:
            raise ValueError(f"Wide-ResNet width must be >= 1, got {width}")
        blocks = (depth - 4) // 6
        widths = (16, 16 * width, 32 * width, 64 * width)
        self.stem = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        groups = []
        for group, stride in enumerate((1, 2, 2)):
            layers = [
                PreActBlock(widths[group] if i == 0 else widths[group + 1], widths[group + 1],
                            stride if i == 0 else 1, drop_rate)
                for i in range(blocks)
            ]
            groups.append(nn.Sequential(*layers))
        self.groups = nn.Sequential(*groups)
        self.norm = nn.BatchNorm2d(widths[-1])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = widths[-1]
        self.head = nn.Linear(widths[-1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation for convolutions (as in the paper's code), unit BN, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled (n, 64k) features before the head."""
        return self.pool(self.relu(self.norm(self.groups(self.stem(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def wide_resnet28(width: int, num_classes: int, in_chans: int = 3, drop_rate: float = 0.0) -> WideResNet:
    """WRN-28-k: 4 blocks per group; WRN-28-10 has about 36.5M parameters, WRN-28-2 about 1.47M."""
    return WideResNet(28, width, num_classes, in_chans, drop_rate)


def _cfg() -> dict[str, Any]:
    """timm metadata of a WRN-28-k (no weights): 32 px CIFAR-style input, pixels in [-1, 1]."""
    return {"num_classes": 10, "input_size": (3, 32, 32), "crop_pct": 1.0, "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5), "first_conv": "stem", "classifier": "head"}


# Read by timm's register_model when the entrypoints below are registered.
default_cfgs = generate_default_cfgs({"wrn28_2": _cfg(), "wrn28_10": _cfg()})


def _create_wrn28(variant: str, width: int, pretrained: bool, **kwargs: Any) -> WideResNet:
    return build_model_with_cfg(WideResNet, variant, pretrained, depth=28, width=width, **kwargs)


@register_project_model
def wrn28_2(pretrained: bool = False, *, drop_rate: float = 0.0, **kwargs: Any) -> WideResNet:
    """WRN-28-2 through timm (about 1.47M parameters); timm passes num_classes and in_chans."""
    return _create_wrn28("wrn28_2", 2, pretrained, drop_rate=drop_rate, **kwargs)


@register_project_model
def wrn28_10(pretrained: bool = False, *, drop_rate: float = 0.0, **kwargs: Any) -> WideResNet:
    """WRN-28-10 through timm (about 36.5M parameters); timm passes num_classes and in_chans."""
    return _create_wrn28("wrn28_10", 10, pretrained, drop_rate=drop_rate, **kwargs)
