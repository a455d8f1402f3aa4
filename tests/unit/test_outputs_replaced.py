"""Outputs that a stage rebuilds whole are built beside the last good one and swapped in: a failure midway
leaves the last good output as it was, with nothing half-written beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mvcaug.io.catalog import FILES
from mvcaug.io.train_plots import DVCLIVE_CONFUSION, write_train_plots
from tests.train_cells import CELLS, train_cells


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failure_midway_leaves_the_last_train_plots_whole(tmp_path):
    train_dir = tmp_path / "train"
    train_cells(train_dir)  # real cells and the plots built from their dvclive logs
    plots = train_dir / FILES.plots
    before = files_under(plots)
    assert any(name.startswith("curves/") for name in before) and any(name.startswith("confusion/") for name in before)
    # a cell's log cut short (a disk that filled up while dvclive wrote it): read after the curves are copied
    (train_dir / "cells" / CELLS[-1].name / DVCLIVE_CONFUSION).write_text("[{\"actual\": ")
    with pytest.raises(json.JSONDecodeError):
        write_train_plots(CELLS, train_dir / "cells", plots)
    assert files_under(plots) == before
    assert sorted(p.name for p in train_dir.iterdir()) == ["cells", FILES.plots]  # no temporary folder left
