"""BLIP-2 captions (the paper's captioner), loaded from a hub id or a local folder (mvcaug.io.model_sources).

Greedy decoding of a small language model sometimes loops ("a a a a") or says nothing useful
("a photo of"); clean_caption catches those so a bad body degrades to the bare label prefix
instead of poisoning the text embeddings the mixing step draws from.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence

import torch
from PIL import Image

from mvcaug.core.devices import auto_dtype, resolve_device
from mvcaug.io.model_sources import load_from_source
from mvcaug.core.params import CaptionParams

__all__ = ["clean_caption", "blip2_id", "Blip2Captioner"]

log = logging.getLogger(__name__)

BLIP2_FOLDER = ("a local folder with the BLIP-2 processor (tokenizer and image processor) and safetensors weights "
                "(`save_pretrained` layout), or a hub id such as Salesforce/blip2-opt-2.7b")


# Longest phrase whose immediate repetition is collapsed ("on a mat on a mat" -> "on a mat").
MAX_REPEAT_NGRAM = 4

# A caption that is only this says nothing about the image.
GENERIC_PHRASE = re.compile(
    r"^(?:(?:this|it|there) is )?(?:(?:a|an|the) )?"
    r"(?:photo|photograph|image|picture|close up|closeup|drawing|painting|view)"
    r"(?: (?:of|with|showing))?(?: (?:a|an|the|some))?$"
)

_WORD_CHARS = re.compile(r"[^\w']+")


def _key(token: str) -> str:
    """A token compared without case or surrounding punctuation: "Cat," equals "cat"."""
    return _WORD_CHARS.sub("", token.lower()).strip("'")


def _collapse_repeats(tokens: list[str]) -> list[str]:
    """Drop immediate repetitions of a word or short phrase, keeping the first occurrence."""
    kept: list[str] = []
    i = 0
    while i < len(tokens):
        for n in range(1, MAX_REPEAT_NGRAM + 1):
            ahead = [_key(t) for t in tokens[i : i + n]]
            if len(ahead) == n and len(kept) >= n and ahead == [_key(t) for t in kept[-n:]] and all(ahead):
                i += n
                break
        else:
            kept.append(tokens[i])
            i += 1
    return kept


def clean_caption(text: str) -> tuple[str, bool]:
    """(caption body, degenerate): degenerate output becomes "" so only the label prefix remains.

    Degenerate: empty or punctuation only, one word repeated (all words the same, or one word over
    half of four or more words), or nothing but a generic "a photo of"-style phrase. Other text has
    immediate word/phrase repeats collapsed and is written as a sentence, like the other captioners.
    """
    tokens = text.split()
    words = [key for key in map(_key, tokens) if key]
    if not words:
        return "", True
    top_count = Counter(words).most_common(1)[0][1]
    if len(words) >= 2 and top_count == len(words):
        return "", True
    if len(words) >= 4 and top_count > len(words) / 2:
        return "", True
    tokens = _collapse_repeats(tokens)
    if GENERIC_PHRASE.match(" ".join(key for key in map(_key, tokens) if key)):
        return "", True
    body = " ".join(tokens)
    body = body[0].upper() + body[1:]
    if body[-1] not in ".!?":
        body = body.rstrip(",;:-") + "."
    return body, False


def blip2_id(params: CaptionParams) -> str:
    """The captioner column's value for BLIP-2 captions."""
    return f"blip2:{params.model}"


class Blip2Captioner:
    """BLIP-2 (Blip2ForConditionalGeneration) captions, greedy and so reproducible for DVC."""

    def __init__(self, params: CaptionParams):
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        self.id = blip2_id(params)
        self.max_new_tokens = params.max_new_tokens
        self.degenerate_count = 0
        self.device = resolve_device(params.device)
        self.dtype = auto_dtype(self.device)
        # The same resolution and one-line ModelError as embed.encoder and finetune.pretrained: a mistyped
        # local path is named as such, never sent to the hub as a repo id.
        self.processor = load_from_source(Blip2Processor.from_pretrained, params.model, "caption.model", BLIP2_FOLDER)
        self.model = load_from_source(Blip2ForConditionalGeneration.from_pretrained, params.model, "caption.model",
                                      BLIP2_FOLDER, dtype=self.dtype, use_safetensors=True)
        self.model.eval().to(self.device)
        log.info("loaded BLIP-2 '%s' on %s (%s)", params.model, self.device, self.dtype)

    @torch.inference_mode()
    def describe(self, images: Sequence[Image.Image], sources: Sequence[str]) -> list[str]:
        """One cleaned caption body per image; the given images are generated as one batch."""
        if not images:
            return []
        inputs = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        inputs = inputs.to(self.device, self.dtype)
        ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        bodies = []
        for k, text in enumerate(texts):
            body, degenerate = clean_caption(text.strip())
            if degenerate:
                self.degenerate_count += 1
                log.debug("degenerate BLIP-2 caption for %s: %r", sources[k] if k < len(sources) else k, text)
            bodies.append(body)
        return bodies
