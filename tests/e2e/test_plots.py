"""`dvc plots show` on real cell folders: curves as lines, confusion matrices with the confusion template,
and not one warning."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mvcaug.io.catalog import FILES
from tests.train_cells import CELLS, train_cells
from tests.workspace import make_workspace, run

pytestmark = pytest.mark.slow


def test_dvc_plots_show_draws_curves_and_confusion_matrices_without_warnings(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    # no dvc.lock: DVC draws the workspace's files as they are, without a full `dvc repro` first
    (ws / "dvc.lock").unlink()
    plots = Path(yaml.safe_load((ws / "params.yaml").read_text())["paths"]["train"], FILES.plots)
    train_cells(ws / plots.parent)
    # the definitions by id, as the README shows (the finetune stage's plots are not made here)
    targets = [f"dvc.yaml::{plots / kind}" for kind in (FILES.curves, FILES.confusion)]
    result = run(["dvc", "plots", "show", "-o", "out", *targets], ws)
    output = result.stdout + result.stderr
    assert "WARNING" not in output and "failed" not in output.lower(), output
    html = (ws / "out" / "index.html").read_text()
    specs = html.split("var spec = ")[1:]  # one Vega-Lite spec per plot
    confusion = [s for s in specs if '"mark": "rect"' in s]
    lines = [s for s in specs if '"mark": "line"' in s]
    assert len(confusion) == 2 and len(lines) == 3 * len(CELLS) and len(specs) == len(confusion) + len(lines)
    assert all(re.search(r'"field": "actual"', s) and re.search(r'"field": "predicted"', s) for s in confusion)
