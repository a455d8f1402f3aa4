"""The evaluation grid gives the same results on every runner: the local one in the stage's own process, the local
one in two worker processes (train.workers, the default on a 2-core CPU), and a two-worker Dask LocalCluster."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

pytest.importorskip("prefect_dask")

from flows.api_server import prefect_api  # noqa: E402
from flows.train import run_train_flow  # noqa: E402
from tests.dask_cluster import finished_on_workers, local_cluster  # noqa: E402

# A Prefect server, two worker processes and two or three runs of the flow: 40-80 s each on two busy cores.
pytestmark = [pytest.mark.slow, pytest.mark.runtime(43)]  # seconds under `make test` at 18e8f52

CELLS = ("small_cnn-default-real-seed0", "small_cnn-default-real-seed1", "small_cnn-default-combined-seed0",
         "small_cnn-default-combined-seed1")


def write_params(workspace: Path, prepared: Path, train: dict) -> None:
    """A real-and-combined 2-seed grid of tiny CNNs on the prepared digits, with a synthetic set of
    mirrored training images kept by the filter."""
    params = {
        "paths": {"prepared": str(prepared), "synthetic": "synthetic", "filter": "filter", "train": "train",
                  "run": "run", "cache": ""},
        "prepare": {"resolution": 16, "channels": 1, "train_per_class": 6, "val_per_class": 4, "test_per_class": 4},
        "generate": {"ablation": False, "compare_pretrained": False, "images_per_class": 2},
        "train": {"strategies": ["real", "combined"], "seeds": [0, 1], "synthetic_budgets": [],
                  "model_settings": {"small_cnn": {"epochs": 2, "batch_size": 16, "width": 4}}, **train},
    }
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))


def write_synthetic_set(workspace: Path, prepared: Path) -> None:
    """Two "synthetic" images per class (real training images, mirrored) and a filter that keeps them all."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image, ImageOps

    manifest = pq.read_table(prepared / "manifest.parquet").to_pylist()
    rows, seen = [], {}
    for row in (r for r in manifest if r["split"] == "train"):
        k = seen[row["label"]] = seen.get(row["label"], -1) + 1
        if k >= 2:
            continue
        path = f"shard-{row['label']}-0000/{row['label']}-{k:05d}.png"
        (workspace / "synthetic" / path).parent.mkdir(parents=True, exist_ok=True)
        ImageOps.mirror(Image.open(prepared / row["path"])).save(workspace / "synthetic" / path)
        rows.append({"path": path, "label": row["label"], "kept": True, "reason": ""})
    (workspace / "filter").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), workspace / "filter" / "mvc.parquet")


def stored_results(workspace: Path) -> dict[str, dict]:
    """{cell: its result.json and its test confusion matrix's (truth, predicted) pairs}."""
    cells = workspace / "train" / "cells"
    found = {}
    for cell in sorted(p.name for p in cells.iterdir()):
        confusion = next((cells / cell / "plots").rglob("confusion*.json"))
        found[cell] = {"result": json.loads((cells / cell / "result.json").read_text()),
                       "confusion": json.loads(confusion.read_text())}
    return found


def test_the_grid_on_two_dask_workers_matches_the_local_runner(digits_prepared, tmp_path, monkeypatch):
    prepared, _ = digits_prepared
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    write_synthetic_set(tmp_path, Path(prepared))
    write_params(tmp_path, Path(prepared), {"task_runner": "local", "workers": 1})
    with prefect_api():
        assert run_train_flow("params.yaml") == {"cells": 4, "trained": 4, "kept": 0, "removed": 0}
        local = stored_results(tmp_path)
        local_summary = json.loads((tmp_path / "train" / "results.json").read_text())
        shutil.rmtree(tmp_path / "train")

        with local_cluster(2) as (address, client):
            write_params(tmp_path, Path(prepared), {"task_runner": "dask", "dask_address": address})
            assert run_train_flow("params.yaml") == {"cells": 4, "trained": 4, "kept": 0, "removed": 0}
            finished = finished_on_workers(client)
            on_dask = stored_results(tmp_path)
            # a rerun keeps every stored cell (resume works the same on Dask)
            assert run_train_flow("params.yaml") == {"cells": 4, "trained": 0, "kept": 4, "removed": 0}

    assert len(finished) == 2 and sum(finished.values()) > 0  # the cells ran on the cluster's workers
    assert sorted(local) == sorted(CELLS) and on_dask == local
    assert json.loads((tmp_path / "train" / "results.json").read_text()) == local_summary


def test_the_grid_in_two_worker_processes_matches_the_stages_own_process(digits_prepared, tmp_path, monkeypatch):
    prepared, _ = digits_prepared
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    write_synthetic_set(tmp_path, Path(prepared))
    write_params(tmp_path, Path(prepared), {"workers": 1})
    with prefect_api():
        assert run_train_flow("params.yaml") == {"cells": 4, "trained": 4, "kept": 0, "removed": 0}
        own = stored_results(tmp_path)
        own_summary = json.loads((tmp_path / "train" / "results.json").read_text())
        shutil.rmtree(tmp_path / "train")

        def not_here(*args, **kwargs):
            raise AssertionError("a cell trained in the stage's own process")

        # the worker processes import their own fit_cell: this one, in the flow's process, must never run
        monkeypatch.setattr("mvcaug.judging.train.fit_cell", not_here)
        write_params(tmp_path, Path(prepared), {"workers": 2})
        assert run_train_flow("params.yaml") == {"cells": 4, "trained": 4, "kept": 0, "removed": 0}
        in_workers = stored_results(tmp_path)
        assert run_train_flow("params.yaml") == {"cells": 4, "trained": 0, "kept": 4, "removed": 0}  # resume

    assert sorted(own) == sorted(CELLS) and in_workers == own
    assert json.loads((tmp_path / "train" / "results.json").read_text()) == own_summary
