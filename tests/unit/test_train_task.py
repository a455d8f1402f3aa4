"""The train stage's tasks: what they refuse before training anything."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mvcaug.judging.cells import Cell
from mvcaug.core.params import Params, PathsParams
from tasks.train import NothingKept, load_training_data


def test_a_filter_that_kept_nothing_is_one_clear_error(digits_prepared, tmp_path):
    folder, _ = digits_prepared
    filter_dir = tmp_path / "filter"
    filter_dir.mkdir()
    dropped = [{"path": f"shard-zero-0000/zero-{k:05d}.png", "label": "zero", "kept": False, "reason": "near_copy"}
               for k in range(3)]
    pq.write_table(pa.Table.from_pylist(dropped), filter_dir / "mvc.parquet")
    params = Params(paths=PathsParams(prepared=str(folder), synthetic=str(tmp_path / "synthetic"), filter=str(filter_dir)))
    with pytest.raises(NothingKept) as info:
        load_training_data.fn(params, [Cell("small_cnn", "default", "combined", 0)])
    message = str(info.value)
    assert message.startswith(f"{filter_dir}/mvc.parquet: the filter kept none of the synthetic images (mvc)")
    assert "filter.enabled: false" in message
    data, digests = load_training_data.fn(params, [Cell("small_cnn", "default", "real", 0)])  # real only: fine
    assert data.synthetic == {} and set(digests) == {"data"} and Path(folder).is_dir()


def test_a_cell_stores_its_test_predictions_and_a_cell_without_them_is_trained_again(tmp_path):
    from mvcaug.judging.cells import PREDICTIONS_FILE
    from tests.train_cells import GRID, digits_data
    from tasks.train import train_cell

    data, cell = digits_data(), Cell("small_cnn", "default", "real", 0)
    cells = tmp_path / "cells"
    result, trained = train_cell.fn(cell, data, GRID, {"data": "d"}, str(cells))
    predictions = pq.read_table(cells / cell.name / PREDICTIONS_FILE).to_pylist()
    assert trained and [row["id"] for row in predictions] == data.test.ids
    right = sum(row["truth"] == row["predicted"] for row in predictions)
    assert right / len(predictions) == result.test_acc  # the bootstrap's input agrees with the stored accuracy
    assert train_cell.fn(cell, data, GRID, {"data": "d"}, str(cells)) == (result, False)  # complete: kept
    (cells / cell.name / PREDICTIONS_FILE).unlink()  # a result stored before predictions were
    assert train_cell.fn(cell, data, GRID, {"data": "d"}, str(cells)) == (result, True)
