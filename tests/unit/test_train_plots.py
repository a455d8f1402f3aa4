"""dvc.yaml's plots against what the train stage really writes: every file DVC would draw from a
declared folder is a data series with the declared fields, and curves and confusion matrices each
have their declaration (the confusion ones with DVC's confusion template)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from mvcaug.io.catalog import FILES
from mvcaug.io.train_plots import DVCLIVE_CONFUSION, DVCLIVE_CURVES, write_train_plots
from tests.train_cells import CELLS, train_cells

REPO_ROOT = Path(__file__).resolve().parents[2]
PLOTS, CURVES, CONFUSION = FILES.plots, FILES.curves, FILES.confusion
METRICS = {"train_loss", "val_acc", "lr"}  # what fit_cell reports per epoch


def declared_plots() -> dict[str, dict]:
    """dvc.yaml's top-level plots as {path: properties}, with ${...} taken from params.yaml and the files its
    vars: name (the artifact catalog), as DVC takes them."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for extra in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text()).get("vars", []):
        params |= yaml.safe_load((REPO_ROOT / extra).read_text())

    def value(match: re.Match) -> str:
        node = params
        for key in match.group(1).split("."):
            node = node[key]
        return str(node)

    declared = {}
    for entry in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["plots"]:
        path, props = next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
        declared[re.sub(r"\$\{([\w.]+)\}", value, path)] = props or {}
    return declared


def drawn_files(root: Path, path: str) -> list[Path]:
    """The files DVC draws for one definition: the file, or every file below the folder."""
    target = root / path
    return sorted(f for f in target.rglob("*") if f.is_file()) if target.is_dir() else [target]


def records(path: Path) -> list:
    if path.suffix == ".tsv":
        with path.open() as handle:
            return list(csv.DictReader(handle, delimiter="\t"))
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder laid out as the project (paths.train inside), with real cells and their plots."""
    root = tmp_path_factory.mktemp("ws")
    train_dir = root / yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["paths"]["train"]
    train_cells(train_dir)
    return root


@pytest.fixture(scope="module")
def train_dir(workspace) -> Path:
    return workspace / yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["paths"]["train"]


def train_definitions(workspace: Path, train_dir: Path) -> dict[str, dict]:
    return {path: props for path, props in declared_plots().items()
            if (workspace / path).resolve().is_relative_to(train_dir.resolve())}


def test_every_drawn_file_is_a_data_series_with_the_declared_fields(workspace, train_dir):
    definitions = train_definitions(workspace, train_dir)
    assert definitions, "dvc.yaml declares no plots of the train stage"
    for path, props in definitions.items():
        files = drawn_files(workspace, path)
        assert files and all(f.is_file() for f in files), f"{path}: the train stage writes nothing there"
        for file in files:
            rows = records(file)
            # result.json and dvclive's metrics.json are objects: DVC would warn and draw nothing
            assert isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows), file
            for axis in ("x", "y"):
                assert props.get(axis) is None or props[axis] in rows[0], f"{file}: no field {props.get(axis)!r}"


def test_curves_are_lines_and_confusion_matrices_use_the_confusion_template(workspace, train_dir):
    confusion_files, curve_files = set(), set()
    for path, props in train_definitions(workspace, train_dir).items():
        files = {f.relative_to(train_dir) for f in drawn_files(workspace, path)}
        if props.get("template") == "confusion":
            assert (props.get("x"), props.get("y")) == ("actual", "predicted")
            confusion_files |= files
        else:
            assert props.get("template", "linear") == "linear" and props.get("x") == "step"
            curve_files |= files
    assert curve_files == {Path(PLOTS, CURVES, cell.name, f"{metric}.tsv") for cell in CELLS for metric in METRICS}
    assert confusion_files == {Path(PLOTS, CONFUSION, f"small_cnn-default-{s}.json") for s in ("real", "combined")}


def test_plots_are_copies_of_the_dvclive_logs_with_the_seeds_pooled(train_dir):
    cells = train_dir / "cells"
    for cell in CELLS:
        for metric in METRICS:
            copied = train_dir / PLOTS / CURVES / cell.name / f"{metric}.tsv"
            assert copied.read_text() == (cells / cell.name / DVCLIVE_CURVES / f"{metric}.tsv").read_text()
    pooled = records(train_dir / PLOTS / CONFUSION / "small_cnn-default-real.json")
    seeds = [records(cells / cell.name / DVCLIVE_CONFUSION) for cell in CELLS[:2]]
    assert pooled == seeds[0] + seeds[1] and len(pooled) == 2 * 40  # 40 test images per seed


def test_the_plots_folder_is_rebuilt_for_the_current_grid(tmp_path, train_dir):
    import shutil

    shutil.copytree(train_dir, tmp_path / "train")
    counts = write_train_plots(CELLS[:1], tmp_path / "train" / "cells", tmp_path / "train" / PLOTS)
    assert counts == {"curves": len(METRICS), "confusion": 1}
    assert [p.name for p in (tmp_path / "train" / PLOTS / CONFUSION).iterdir()] == ["small_cnn-default-real.json"]
    assert [p.name for p in (tmp_path / "train" / PLOTS / CURVES).iterdir()] == [CELLS[0].name]
