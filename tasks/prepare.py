"""Task of the prepare stage."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.params import PrepareParams
from mvcaug.prepare import prepare_dataset


@task(cache_policy=NO_CACHE)
def prepare(params: PrepareParams, out_dir: str) -> int:
    """Materialise the dataset; returns the number of images written."""
    return prepare_dataset(params, out_dir).num_rows
