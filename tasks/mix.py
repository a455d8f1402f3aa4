"""Task of the mix stage."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.embedding_table import read_embeddings, write_embeddings
from mvcaug.mix import mix_embeddings
from mvcaug.params import MixParams


@task(cache_policy=NO_CACHE)
def mix(params: MixParams, embeddings_dir: str, out_file: str) -> int:
    """Algorithm 1 for every class; returns the number of new embeddings."""
    table, array, info = read_embeddings(Path(embeddings_dir) / "embeddings.parquet")
    columns, mixed = mix_embeddings(table["id"].to_pylist(), table["label"].to_pylist(), array, params)
    mix_info = {**info, "coarse_steps": params.coarse_steps, "fine_steps": params.fine_steps, "seed": params.seed}
    write_embeddings(out_file, columns, mixed.astype(array.dtype), mix_info)
    return len(mixed)
