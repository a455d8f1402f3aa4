"""Shards on a 2-worker Dask LocalCluster give the same images as the local task runner."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.dask_cluster import finished_on_workers, local_cluster
from tests.workspace import copy_workspace, run, update_params

pytestmark = [pytest.mark.slow, pytest.mark.runtime(49)]  # seconds under `make test` at 18e8f52


def synthetic_pixels(workspace: Path) -> dict[str, np.ndarray]:
    folder = workspace / "data/07_synthetic"
    rows = pq.read_table(folder / "manifest.parquet").to_pylist()
    return {r["path"]: np.asarray(Image.open(folder / r["path"]), dtype=np.int16) for r in rows}


def test_dask_runner_matches_local(mixed: Path, tmp_path: Path) -> None:
    pytest.importorskip("prefect_dask")
    ws = copy_workspace(mixed, tmp_path / "ws")  # up to mix and pretrain
    update_params(ws, {"generate": {"images_per_class": 2}})
    run(["dvc", "repro", "finetune"], ws)
    run(["python", "-m", "flows.generate"], ws)
    local = synthetic_pixels(ws)

    shutil.rmtree(ws / "data/07_synthetic")
    with local_cluster(2) as (address, client):
        update_params(ws, {"generate": {"task_runner": "dask", "dask_address": address}})
        run(["python", "-m", "flows.generate"], ws)
        finished = finished_on_workers(client)
    assert len(finished) == 2 and sum(finished.values()) > 0  # the shards ran on the cluster's workers
    on_dask = synthetic_pixels(ws)

    assert on_dask.keys() == local.keys() and len(local) == 10 * 2
    for path, pixels in local.items():
        assert np.abs(pixels - on_dask[path]).max() <= 2, path  # float reductions may differ by thread count
