"""The scorers' models from local files: torchvision's Inception-v3 weights (FID/KID features,
mvcaug.judging.inception) and a CLIP folder (zero-shot labels, mvcaug.judging.clip_scores). Never a download,
never pickle."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvcaug.core.errors import UserError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["HOW_TO_GET", "ClipModelError", "load_inception", "load_clip"]

HOW_TO_GET = (
    "save a CLIP model there once on a machine with internet (`hf download openai/clip-vit-base-patch32 "
    "--local-dir models/clip-vit-base-patch32`: config, safetensors weights, tokenizer, preprocessor_config.json) "
    "and point filter.clip_model at it, or set filter.clip_model to \"\" to score with the classifier"
)


class ClipModelError(UserError, ValueError):
    """filter.clip_model is not a loadable local CLIP folder."""


log = logging.getLogger(__name__)


def load_inception(weights_path: str | Path) -> nn.Module:
    """torchvision's inception_v3 with the file's weights, fc replaced by Identity, in eval mode.

    transform_input=True as torchvision sets it for its pretrained weights: they were trained on
    inputs in [-1, 1], and the model maps ImageNet-normalised inputs to that range itself.

    Raises:
        InceptionWeightsError: When the file is missing, not safetensors, or does not fit the model.
    """
    import safetensors.torch
    import torchvision
    from torch import nn
    from mvcaug.judging.inception import HOW_TO_MAKE, InceptionWeightsError

    path = Path(weights_path)
    if not path.is_file():
        raise InceptionWeightsError(f"quality.inception_weights: no such file '{path}'; {HOW_TO_MAKE}")
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    try:
        model.load_state_dict(safetensors.torch.load_file(str(path)))
    except Exception as err:  # safetensors' own error type, or load_state_dict's key/shape mismatch
        reason = str(err).splitlines()[0][:300]
        raise InceptionWeightsError(
            f"quality.inception_weights: cannot load '{path}' as torchvision's inception_v3 state dict "
            f"({type(err).__name__}: {reason}); {HOW_TO_MAKE}"
        ) from err
    model.fc = nn.Identity()
    log.info("Inception-v3 weights: %s", path)
    return model.eval()


def load_clip(folder: str | Path) -> tuple[Any, Any, Any]:
    """(CLIPModel, CLIPTokenizer, CLIPImageProcessor) from a local folder, safetensors weights only, never a
    download; a missing folder or one that does not load is a ClipModelError saying how to get one."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    path = Path(folder)
    if not path.is_dir():
        raise ClipModelError(f"filter.clip_model: no such folder '{path}'; {HOW_TO_GET}")
    try:
        model = CLIPModel.from_pretrained(path, use_safetensors=True, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)
        image_processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
    except Exception as err:  # OSError for missing files, ValueError/JSON/safetensors errors for broken ones
        reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise ClipModelError(f"filter.clip_model: cannot load a CLIP model from '{path}' "
                             f"({type(err).__name__}: {reason}); {HOW_TO_GET}") from err
    return model, tokenizer, image_processor
