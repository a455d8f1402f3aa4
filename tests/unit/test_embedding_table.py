"""Embeddings in Parquet: exact round trips, shape and dtype in the metadata, fixed-size list column."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mvcaug.io.embedding_table import (
    EMBEDDING_COLUMN, METADATA_KEY, embedding_info, embedding_table, read_embeddings, write_embeddings,
)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_round_trip(tmp_path, rng, dtype):
    n, m, d = 5, 3, 7
    array = rng.normal(size=(n, m, d)).astype(dtype)
    columns = {"id": [f"e{i}" for i in range(n)], "label": list("aabbc")}
    path = tmp_path / "sub" / "emb.parquet"
    write_embeddings(path, columns, array, {"encoder": "test-encoder"})
    table, back, info = read_embeddings(path)
    assert back.dtype == np.dtype(dtype)
    assert back.shape == (n, m, d)
    assert np.array_equal(back, array)
    assert info == {"shape": [m, d], "dtype": np.dtype(dtype).name, "encoder": "test-encoder"}
    assert table.column_names == ["id", "label"]
    assert table.to_pydict() == columns
    # no temporary files are left beside the output
    assert [p.name for p in path.parent.iterdir()] == ["emb.parquet"]


def test_column_is_a_fixed_size_list_with_metadata(tmp_path, rng):
    array = rng.normal(size=(4, 2, 3)).astype(np.float16)
    path = tmp_path / "emb.parquet"
    write_embeddings(path, {"id": list("abcd")}, array)
    raw = pq.read_table(path)
    column_type = raw.schema.field(EMBEDDING_COLUMN).type
    assert pa.types.is_fixed_size_list(column_type)
    assert column_type.list_size == 2 * 3
    assert column_type.value_type == pa.float16()
    meta = json.loads(raw.schema.metadata[METADATA_KEY])
    assert meta["shape"] == [2, 3] and meta["dtype"] == "float16"
    # each row is one embedding, flattened row-major
    assert np.array_equal(np.asarray(raw[EMBEDDING_COLUMN][2].as_py(), np.float16), array[2].reshape(-1))


def test_in_memory_table_and_errors(tmp_path, rng):
    array = rng.normal(size=(2, 3, 4)).astype(np.float32)
    table = embedding_table({"id": ["x", "y"]}, array, {"extra": 1})
    assert embedding_info(table) == {"shape": [3, 4], "dtype": "float32", "extra": 1}
    assert table.num_rows == 2
    with pytest.raises(ValueError, match=r"\(n, m, d\)"):
        embedding_table({"id": ["x"]}, array[0], None)
    with pytest.raises(ValueError, match="metadata"):
        embedding_info(pa.table({"id": ["x"]}))
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_embeddings(tmp_path / "nope.parquet")


def test_non_contiguous_input_is_stored_in_logical_order(tmp_path, rng):
    base = rng.normal(size=(3, 4, 5)).astype(np.float32)
    view = base.transpose(0, 2, 1)  # (3, 5, 4), not C-contiguous
    path = tmp_path / "t.parquet"
    write_embeddings(path, {"id": ["a", "b", "c"]}, view)
    _, back, info = read_embeddings(path)
    assert info["shape"] == [5, 4]
    assert np.array_equal(back, view)
