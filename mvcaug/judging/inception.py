"""Inception-v3 pool features for FID/KID, from torchvision's `inception_v3` weights in a local file.

The weights come only from a safetensors file (never a download, never pickle): make it once on a
machine with internet, as the README shows (mvcaug.io.scorer_models.load_inception reads it). Features are
torchvision's, not pytorch-fid's TF-ported FID Inception, so values are comparable between runs of this
pipeline, not with published FIDs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvcaug.core.errors import UserError
from mvcaug.judging.quality import TensorFn

__all__ = ["INCEPTION_DIM", "HOW_TO_MAKE", "InceptionWeightsError", "inception_feature_fn"]


INCEPTION_SIZE = 299
"""Input side of Inception-v3, pixels."""
INCEPTION_DIM = 2048
"""Dimension of its pool features."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HOW_TO_MAKE = (
    "make it on a machine with internet: python -c \"import torchvision, safetensors.torch as st; "
    "st.save_file(torchvision.models.inception_v3(weights='DEFAULT').state_dict(), 'inception_v3.safetensors')\", "
    "copy it here and set quality.inception_weights to its path (or \"\" to skip Inception features)"
)


class InceptionWeightsError(UserError, ValueError):
    """The Inception weights file is missing, unreadable or not torchvision's inception_v3 state dict."""


def inception_feature_fn(model: nn.Module, batch_size: int = 32) -> TensorFn:
    """A feature_fn for mvcaug.judging.quality: (n, 1 or 3, H, W) pixels in [-1, 1] -> (n, 2048) pool features.

    Images are resized to 299 x 299 (bilinear, antialiased when shrinking), grayscale is repeated to
    three channels, and ImageNet mean/std normalise them. Inputs move to the model's device and pass
    batch_size at a time: at 299 px, activations, not the inputs, bound the memory."""
    model.eval()
    parameter = next(model.parameters())
    mean = torch.tensor(IMAGENET_MEAN, device=parameter.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=parameter.device).view(1, 3, 1, 1)

    def preprocess(pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.to(device=parameter.device, dtype=torch.float32) + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ValueError(f"Inception features need 1 or 3 channels, got {x.shape[1]}")
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > INCEPTION_SIZE)
        return ((x - mean) / std).to(parameter.dtype)

    @torch.no_grad()
    def features(pixels: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(preprocess(chunk)) for chunk in pixels.split(batch_size)])

    return features
