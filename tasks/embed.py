"""Task of the embed stage."""

from pathlib import Path

import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.embed import encode_texts, encoder_info, load_text_encoder, null_text, storage_dtype
from mvcaug.embedding_table import write_embeddings
from mvcaug.params import EmbedParams


@task(cache_policy=NO_CACHE)
def embed(params: EmbedParams, captions_file: str, out_dir: str) -> tuple[int, int, int]:
    """Write embeddings.parquet (one m x d matrix per caption) and null.parquet; returns (n, m, d)."""
    captions = pq.read_table(captions_file)
    encoder = load_text_encoder(params)
    dtype = storage_dtype(params.dtype)
    array = encode_texts(encoder, captions["caption"].to_pylist(), params.batch_size).astype(dtype)
    null = encode_texts(encoder, [null_text()], 1).astype(dtype)
    info = encoder_info(encoder, params)
    columns = {name: captions[name].to_pylist() for name in ("id", "label", "caption")}
    write_embeddings(Path(out_dir) / "embeddings.parquet", columns, array, info)
    write_embeddings(Path(out_dir) / "null.parquet", {"caption": [null_text()]}, null, info)
    return array.shape
