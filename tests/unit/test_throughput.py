"""Throughput: what a stage did per second of one device's busy time, recorded by its tasks into the
stage-times file and read back by the report."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
import torch

from mvcaug.core.devices import device_label
from mvcaug.core.throughput import Throughput, combined, describe
from mvcaug.io.stage_times import (
    STAGE_VARIABLE, add_throughput, note_throughput, read_stage_times, record_stage_time, stage_throughput,
    start_stage_record,
)


def test_measures_of_the_same_work_and_device_add_up_and_others_stay_apart() -> None:
    measures = [Throughput("images", 40, 10.0, "cpu"), Throughput("images", 60, 10.0, "cpu"),
                Throughput("images", 500, 5.0, "cuda: H100")]
    assert combined(measures) == [Throughput("images", 100, 20.0, "cpu"), Throughput("images", 500, 5.0, "cuda: H100")]
    assert combined(measures)[0].rate == 5.0
    assert describe(measures) == "5 images/s on cpu (100 in 20 s); 100 images/s on cuda: H100 (500 in 5 s)"


def test_a_rate_under_one_per_second_reads_per_minute() -> None:
    assert describe([Throughput("cells", 3, 40.0, "cpu")]) == "4.5 cells/min on cpu (3 in 40 s)"
    assert describe([Throughput("epochs", 1200, 300.0, "cpu")]) == "4 epochs/s on cpu (1,200 in 300 s)"
    assert Throughput("cells", 3, 0.0, "cpu").rate == 0.0


def test_device_label_names_the_device_type_on_the_cpu() -> None:
    assert device_label(torch.device("cpu")) == "cpu" and device_label("cpu") == "cpu"


def test_a_stage_start_empties_its_throughput_and_its_end_keeps_this_runs(tmp_path: Path) -> None:
    times = tmp_path / "stage-times.json"
    record_stage_time(times, "prepare", 2.0)
    add_throughput(times, "train", Throughput("cells", 5, 50.0, "cpu"))  # an earlier run's
    start_stage_record(times, "train")
    add_throughput(times, "train", Throughput("cells", 2, 10.0, "cpu"))
    add_throughput(times, "train", Throughput("epochs", 0, 10.0, "cpu"))  # nothing done: not recorded
    record_stage_time(times, "train", 12.5)
    entries = read_stage_times(times)
    assert entries["train"]["seconds"] == 12.5 and "finished" in entries["train"]
    assert stage_throughput(entries["train"]) == [Throughput("cells", 2, 10.0, "cpu")]
    assert stage_throughput(entries["prepare"]) == [] and entries["prepare"]["seconds"] == 2.0


def test_a_task_records_under_the_stage_that_runs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STAGE_VARIABLE, raising=False)
    note_throughput(tmp_path, "train", Throughput("cells", 1, 3.0, "cpu"))
    monkeypatch.setenv(STAGE_VARIABLE, "replicates")  # the replicates stage runs the train tasks too
    note_throughput(tmp_path, "train", Throughput("cells", 2, 4.0, "cpu"))
    entries = json.loads((tmp_path / "stage-times.json").read_text())
    assert [r["count"] for r in entries["train"]["throughput"]] == [1]
    assert [r["count"] for r in entries["replicates"]["throughput"]] == [2]


def add_many(times: str, worker: int) -> None:
    for _ in range(20):
        add_throughput(times, "train", Throughput("cells", 1, 1.0, f"worker {worker}"))


def test_workers_adding_at_once_lose_no_measure(tmp_path: Path) -> None:
    times = str(tmp_path / "stage-times.json")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=add_many, args=(times, w)) for w in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [m.count for m in combined(stage_throughput(read_stage_times(times)["train"]))] == [20, 20, 20]
