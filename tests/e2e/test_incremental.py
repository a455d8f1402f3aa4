"""Adding images to a dataset: caption and embed run only for the new training images, give the
same files as a from-scratch run (captioned on a 2-worker Dask LocalCluster)."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.dask_cluster import finished_on_workers, local_cluster
from tests.workspace import TINY_PARAMS, make_workspace, own_images, run, update_params, write_digits

pytestmark = [pytest.mark.slow, pytest.mark.runtime(60)]  # seconds under `make test` at 18e8f52

PER_CLASS_FIRST = 60  # images per class in the first version of the dataset
PER_CLASS_ADDED = 6   # then 10% more


def logged_summary(output: str, stage: str) -> dict:
    """The summary dict that a stage logs as '<stage> ...: {...}'."""
    match = re.findall(rf"{stage}[^{{\n]*: (\{{[^}}]*\}})", output)
    assert match, f"no {stage} summary in:\n{output[-3000:]}"
    return ast.literal_eval(match[-1])


def train_hashes(ws: Path) -> set[str]:
    manifest = pq.read_table(ws / "data/01_prepared/manifest.parquet").to_pylist()
    return {row["sha256"] for row in manifest if row["split"] == "train"}


def outputs(ws: Path) -> dict:
    return {"captions": pq.read_table(ws / "data/02_captions/captions.parquet"),
            "embeddings": pq.read_table(ws / "data/03_embeddings/embeddings.parquet"),
            "null": pq.read_table(ws / "data/03_embeddings/null.parquet")}


def test_new_images_are_captioned_and_embedded_alone(tmp_path: Path) -> None:
    params = {**TINY_PARAMS, "prepare": {"source": "imagefolder", "image_folder": "data/00_source",
                                         "train_per_class": 30, "val_per_class": 5, "test_per_class": 0},
              "caption": {"shard_size": 40}}
    ws = make_workspace(tmp_path / "ws", own_images(params))
    write_digits(ws / "data/00_source", 0, PER_CLASS_FIRST)
    first = run(["dvc", "repro", "embed"], ws)
    assert logged_summary(first.stdout + first.stderr, "caption")["captioned"] == 300
    before = train_hashes(ws)

    write_digits(ws / "data/00_source", PER_CLASS_FIRST, PER_CLASS_FIRST + PER_CLASS_ADDED)
    second = run(["dvc", "repro", "embed"], ws)
    log = second.stdout + second.stderr
    new_train = train_hashes(ws) - before
    caption_summary, embed_summary = logged_summary(log, "caption"), logged_summary(log, "embed")
    assert 0 < len(new_train) <= 10 * PER_CLASS_ADDED
    assert caption_summary["captioned"] == len(new_train) and caption_summary["reused"] == 300 - len(new_train)
    assert embed_summary["encoded"] <= len(new_train)  # only captions never embedded before
    incremental = outputs(ws)

    # From scratch (no cache), with captioning shards on a 2-worker Dask LocalCluster: the same files.
    pytest.importorskip("prefect_dask")
    shutil.rmtree(ws / ".mvcaug-cache")
    with local_cluster(2) as (address, client):
        update_params(ws, {"caption": {"task_runner": "dask", "dask_address": address, "shard_size": 40}})
        on_dask = run(["python", "-m", "flows.caption"], ws)
        finished = finished_on_workers(client)
    assert len(finished) == 2 and sum(finished.values()) > 0  # the shards ran on the cluster's workers
    dask_log = on_dask.stdout + on_dask.stderr
    summary = logged_summary(dask_log, "caption")
    assert (summary["captioned"], summary["reused"], summary["shards"]) == (300, 0, 8)  # 300 images / 40 a shard
    embed_run = run(["python", "-m", "flows.embed"], ws)
    distinct = set(incremental["captions"]["caption"].to_pylist()) | {""}  # and the null text
    assert logged_summary(embed_run.stdout + embed_run.stderr, "embed")["encoded"] == len(distinct)
    scratch = outputs(ws)
    for name, table in scratch.items():
        assert table.equals(incremental[name]), f"{name}: incremental output differs from a from-scratch run"
