"""The train stage's tasks: what they refuse before training anything."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mvcaug.judging.cells import Cell
from mvcaug.core.params import Params, PathsParams
from tasks.train import NothingKept, TrainOutputs, load_training_data, train_outputs


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
    from mvcaug.io.catalog import FILES
    from tests.train_cells import GRID, digits_data
    from tasks.train import train_cell

    data, cell = digits_data(), Cell("small_cnn", "default", "real", 0)
    cells = tmp_path / "cells"
    result, trained = train_cell.fn(cell, data, GRID, {"data": "d"}, str(cells))
    predictions = pq.read_table(cells / cell.name / FILES.predictions).to_pylist()
    assert trained and [row["id"] for row in predictions] == data.test.ids
    right = sum(row["truth"] == row["predicted"] for row in predictions)
    assert right / len(predictions) == result.test_acc  # the bootstrap's input agrees with the stored accuracy
    assert train_cell.fn(cell, data, GRID, {"data": "d"}, str(cells)) == (result, False)  # complete: kept
    (cells / cell.name / FILES.predictions).unlink()  # a result stored before predictions were
    assert train_cell.fn(cell, data, GRID, {"data": "d"}, str(cells)) == (result, True)


def test_the_train_outputs_lie_under_the_root_the_flow_is_given(tmp_path):
    from mvcaug.io.catalog import FILES

    params = Params(paths=PathsParams(train="data/10_train"))
    outputs = train_outputs(tmp_path, params)
    folder = tmp_path / "data" / "10_train"
    assert outputs == TrainOutputs(str(folder / FILES.cells), str(folder / FILES.results), str(folder / FILES.plots))
    assert train_outputs(str(tmp_path), params) == outputs  # the flow's root arrives as a string
    absolute = Params(paths=PathsParams(train=str(tmp_path / "elsewhere")))
    assert Path(train_outputs("/some/root", absolute).results).parent == tmp_path / "elsewhere"
