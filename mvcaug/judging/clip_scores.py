"""Zero-shot class probabilities from a local CLIP model: a LabelScorer for mvcaug.judging.filter.

A classifier trained on five real images per class is a weak judge of whether a synthetic image shows
its class; CLIP, trained on image-text pairs, judges from the class name alone. The probability of a
class is the softmax, over every class, of CLIP's scaled cosine similarity between the image and a
prompt naming that class ("a photo of a {label}."). The model comes only from a local folder holding
safetensors weights (never a download, never pickle, never remote code).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F

from mvcaug.core.devices import resolve_device
from mvcaug.data.images import to_image

__all__ = ["ClipScorer"]

if TYPE_CHECKING:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

log = logging.getLogger(__name__)

PROMPT = "a photo of a {label}."
"""CLIP's usual zero-shot prompt; {label} is the class name with underscores as spaces."""

def _pooled(output: torch.Tensor | BaseModelOutputWithPooling) -> torch.Tensor:
    """The projected embedding: transformers 5 returns it as pooler_output, 4.x as the tensor itself."""
    # CLIP's get_*_features always fill pooler_output (the field is Optional in the output dataclass)
    return output if isinstance(output, torch.Tensor) else cast(torch.Tensor, output.pooler_output)


class ClipScorer:
    """Zero-shot probabilities of each class, from CLIPModel + CLIPTokenizer + CLIPImageProcessor."""

    def __init__(self, folder: str | Path, device: str = "auto", batch_size: int = 64, prompt: str = PROMPT):
        from mvcaug.io.scorer_models import load_clip  # transformers only when a CLIP scorer is asked for

        path = Path(folder)
        self.model, self.tokenizer, self.image_processor = load_clip(path)
        self.name = f"clip:{path}"
        self.device = resolve_device(device)
        self.model.eval().to(self.device)
        self.batch_size = batch_size
        self.prompt = prompt
        self._text: dict[tuple[str, ...], torch.Tensor] = {}
        log.info("CLIP label scorer: %s on %s", path, self.device)

    @torch.inference_mode()
    def class_embeddings(self, classes: Sequence[str]) -> torch.Tensor:
        """(K, p) unit text embeddings of the class prompts, computed once per class list."""
        key = tuple(classes)
        if key not in self._text:
            prompts = [self.prompt.format(label=label.replace("_", " ")) for label in key]
            tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(self.device)
            embeddings = _pooled(self.model.get_text_features(**tokens))
            self._text[key] = F.normalize(embeddings.double(), dim=-1)
        return self._text[key]

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor, classes: Sequence[str]) -> np.ndarray:
        """(n, K) probabilities over `classes` for (n, C, H, W) images in [-1, 1] (grayscale is repeated to RGB)."""
        text = self.class_embeddings(classes)
        scale = self.model.logit_scale.exp().double()
        probabilities = []
        for batch in pixels.split(self.batch_size):
            # the processor resizes, crops and normalises as the model was trained; it takes PIL images
            images = [to_image(image).convert("RGB") for image in batch]
            inputs = self.image_processor(images=images, return_tensors="pt").to(self.device)
            embeddings = F.normalize(_pooled(self.model.get_image_features(**inputs)).double(), dim=-1)
            probabilities.append((scale * embeddings @ text.T).softmax(1).cpu().numpy())
        if not probabilities:
            raise ValueError("no images")
        return np.concatenate(probabilities)
