"""Store m x d embeddings in Parquet: a fixed-size list column, with shape and dtype in the schema.

Fixed-size lists keep every row one contiguous block, so a table reads back into an (n, m, d)
array without copying per row, and the metadata lets any reader check the shape it expects.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mvcaug.io.atomic import write_parquet

__all__ = ["EMBEDDING_COLUMN", "METADATA_KEY", "embedding_table", "write_embeddings", "embedding_info",
    "read_embeddings"]

EMBEDDING_COLUMN = "embedding"
METADATA_KEY = b"mvcaug.embedding"


def embedding_table(
    columns: dict[str, list[Any]], embeddings: np.ndarray, info: dict[str, Any] | None = None
) -> pa.Table:
    """A table of `columns` plus the (n, m, d) `embeddings`, with shape/dtype/info in the metadata."""
    if embeddings.ndim != 3:
        raise ValueError(f"embeddings must be (n, m, d), got shape {embeddings.shape}")
    n, m, d = embeddings.shape
    flat = pa.array(np.ascontiguousarray(embeddings).reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(flat, m * d)
    table = pa.table({**columns, EMBEDDING_COLUMN: column})
    meta = {"shape": [m, d], "dtype": str(embeddings.dtype), **(info or {})}
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})


def write_embeddings(
    path: str | Path, columns: dict[str, list[Any]], embeddings: np.ndarray, info: dict[str, Any] | None = None
) -> None:
    write_parquet(path, embedding_table(columns, embeddings, info))


def embedding_info(table: pa.Table) -> dict[str, Any]:
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError("table has no embedding metadata (shape, dtype); was it written by mvcaug?")
    return json.loads(raw)


def read_embeddings(path: str | Path) -> tuple[pa.Table, np.ndarray, dict[str, Any]]:
    """(the other columns, the (n, m, d) array in its stored dtype, the metadata)."""
    path = Path(path)
    if not path.is_file():
        # errno and filename: the stage's command line names the stage that writes it (flows/cli.py)
        raise FileNotFoundError(errno.ENOENT, "embeddings not found", str(path))
    table = pq.read_table(path)
    info = embedding_info(table)
    m, d = info["shape"]
    values = table[EMBEDDING_COLUMN].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    array = values.astype(info["dtype"], copy=False).reshape(table.num_rows, m, d)
    return table.drop_columns([EMBEDDING_COLUMN]), array, info
