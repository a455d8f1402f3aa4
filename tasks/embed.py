"""Task of the embed stage: every caption's m x d embedding and the null text's, through the cache.

Texts embedded before (same text, encoder configuration and code) are read back from paths.cache; the
encoder is loaded only when some text is new, and new embeddings are stored batch by batch, so a late
failure loses only the batch it happened in. The tokenizer alone always loads first: it refuses an
embed.max_length above the encoder's limit and counts the captions m tokens truncate (logged, and kept
in embeddings.parquet's metadata under "truncation"). The result equals a from-scratch run because each text is
padded to m tokens alone, whatever else shares its batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.content_cache import open_cache
from mvcaug.io.embedding_table import write_embeddings
from mvcaug.core.params import EmbedParams
from mvcaug.io.catalog import FILES

__all__ = ["embed"]

log = logging.getLogger("mvcaug.method.embed")


@task(cache_policy=NO_CACHE)
def embed(params: EmbedParams, captions_file: str, out_dir: str, cache_dir: str = "") -> dict:
    """Write embeddings.parquet (one m x d matrix per caption) and null.parquet; returns counts."""
    from mvcaug.method.embed import (
        embed_texts, encoder_info, load_tokenizer, null_text, storage_dtype, truncation_summary,
    )

    captions = pq.read_table(captions_file)
    texts = captions["caption"].to_pylist()
    truncation = truncation_summary(load_tokenizer(params), texts, params.max_length)
    if truncation["truncated"]:
        log.warning("embed: %d of %d captions are longer than embed.max_length=%d tokens (the longest has %d) and "
                    "are truncated: their last words never reach the encoder", truncation["truncated"],
                    truncation["texts"], params.max_length, truncation["longest_tokens"])
    embeddings, encoded = embed_texts(texts + [null_text()], params, open_cache(cache_dir))
    dtype = storage_dtype(params.dtype)
    array, null = embeddings[:-1].astype(dtype), embeddings[-1:].astype(dtype)
    info = encoder_info(params)
    columns = {name: captions[name].to_pylist() for name in ("id", "label", "caption")}
    write_embeddings(Path(out_dir) / FILES.embeddings, columns, array, {**info, "truncation": truncation})
    write_embeddings(Path(out_dir) / FILES.null_embedding, {"caption": [null_text()]}, null, info)
    summary = {"captions": len(texts), "encoded": encoded, "shape": list(array.shape),
               "truncated": truncation["truncated"]}
    log.info("embed: %s", summary)
    return summary
