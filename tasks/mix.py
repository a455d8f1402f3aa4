"""Task of the mix stage."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.embedding_table import read_embeddings, write_embeddings
from mvcaug.method.mix import unmixed_params, mix_embeddings
from mvcaug.core.params import MixParams
from mvcaug.io.catalog import FILES

__all__ = ["mix"]


@task(cache_policy=NO_CACHE)
def mix(params: MixParams, embeddings_dir: str, out_file: str, unmixed_file: str) -> int:
    """Algorithm 1 for every class, into out_file, and with P = Q = 0 (the MVC ablation) into unmixed_file;
    returns the number of new embeddings per table."""
    table, array, info = read_embeddings(Path(embeddings_dir) / FILES.embeddings)
    ids, labels = table["id"].to_pylist(), table["label"].to_pylist()
    for settings, target in ((params, out_file), (unmixed_params(params), unmixed_file)):
        columns, mixed = mix_embeddings(ids, labels, array, settings)
        mix_info = {**info, "coarse_steps": settings.coarse_steps, "fine_steps": settings.fine_steps,
                    "seed": settings.seed}
        write_embeddings(target, columns, mixed.astype(array.dtype), mix_info)
    return len(mixed)
