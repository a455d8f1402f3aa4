"""Task of the embed stage."""

import logging
from pathlib import Path

import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.content_cache import ContentCache
from mvcaug.embed import embed_texts, encoder_info, null_text, storage_dtype
from mvcaug.embedding_table import write_embeddings
from mvcaug.params import EmbedParams

log = logging.getLogger("mvcaug.embed")


@task(cache_policy=NO_CACHE)
def embed(params: EmbedParams, captions_file: str, out_dir: str, cache_dir: str = "") -> dict:
    """Write embeddings.parquet (one m x d matrix per caption) and null.parquet; returns counts."""
    captions = pq.read_table(captions_file)
    cache = ContentCache(Path(cache_dir) / "content.sqlite") if cache_dir else None
    texts = captions["caption"].to_pylist()
    embeddings, encoded = embed_texts(texts + [null_text()], params, cache)
    dtype = storage_dtype(params.dtype)
    array, null = embeddings[:-1].astype(dtype), embeddings[-1:].astype(dtype)
    info = encoder_info(params)
    columns = {name: captions[name].to_pylist() for name in ("id", "label", "caption")}
    write_embeddings(Path(out_dir) / "embeddings.parquet", columns, array, info)
    write_embeddings(Path(out_dir) / "null.parquet", {"caption": [null_text()]}, null, info)
    summary = {"captions": len(texts), "encoded": encoded, "shape": list(array.shape)}
    log.info("embed: %s", summary)
    return summary
