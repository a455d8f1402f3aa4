"""Reading a synthetic set's tables: the manifest generate wrote, and the filter stage's decisions on it
(which set is where: mvcaug.data.synthetic_sets)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from mvcaug.core.errors import MissingInputError
from mvcaug.core.params import PathsParams
from mvcaug.data.synthetic_sets import SyntheticSet, decisions_file
from mvcaug.io.catalog import FILES

__all__ = ["manifest_rows", "decision_rows", "kept_rows"]


def manifest_rows(synthetic: SyntheticSet) -> list[dict]:
    """The rows of a set's manifest.parquet (path, label, shard, index, seed, mixed_id, cond_id)."""
    path = Path(synthetic.folder) / FILES.manifest
    if not path.is_file():
        raise MissingInputError(f"{path}: no synthetic manifest; run the generate stage first", stage="generate")
    return pq.read_table(path).to_pylist()


def decision_rows(synthetic: SyntheticSet, paths: PathsParams) -> list[dict]:
    """Every image of a set with the filter's decision, in manifest order."""
    path = decisions_file(synthetic, paths)
    if not path.is_file():
        raise MissingInputError(f"{path}: no filter decisions; run the filter stage first", stage="filter")
    return pq.read_table(path).to_pylist()


def kept_rows(synthetic: SyntheticSet, paths: PathsParams) -> list[dict]:
    """The images of a set that the filter kept (all of them with filter.enabled false), in manifest order."""
    return [row for row in decision_rows(synthetic, paths) if row["kept"]]
