"""Task of the report stage."""

import csv
import json
import statistics
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.atomic import write_json, write_text
from mvcaug.images import read_manifest
from mvcaug.params import Params
from mvcaug.report import SampleRow, metrics_markdown, render_html, result_column, summarise
from mvcaug.train import Cell, RunResult


@task(cache_policy=NO_CACHE)
def report(params: Params) -> dict:
    """metrics.json (DVC metrics), report.html (tables, per-class grid, loss curve) and report.md."""
    paths = params.paths
    results = [RunResult(**r) for r in json.loads((Path(paths.train) / "results.json").read_text())]
    metrics = summarise(results)
    write_json(paths.metrics, metrics)
    quality_file = Path(paths.quality) / "metrics.json"
    quality = json.loads(quality_file.read_text()) if quality_file.is_file() else None
    with (Path(paths.model) / "loss.csv").open() as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    mix_steps = (params.mix.coarse_steps, params.mix.fine_steps)
    html = render_html(metrics, results, sample_rows(params), losses, quality,
                       curves=validation_curves(params, results), mix_steps=mix_steps)
    write_text(Path(paths.report) / "report.html", html)
    markdown = metrics_markdown(metrics, mix_steps, quality)
    write_text(Path(paths.report) / "report.md",
               "# mvcaug report\n\n" + markdown + "\nSample grids and curves: report.html, beside this file.\n")
    return metrics


def validation_curves(params: Params, results: list[RunResult]) -> dict[str, dict[str, list[float]]]:
    """{model: {grid column: validation accuracy per epoch, averaged over seeds}} from the cells' dvclive logs."""
    per_column: dict[tuple[str, str], list[list[float]]] = {}
    for r in results:
        cell = Cell(r.model, r.baseline, r.strategy, r.seed, r.synthetic_set).name
        tsv = Path(params.paths.train) / "cells" / cell / "plots" / "metrics" / "val_acc.tsv"
        if tsv.is_file():
            with tsv.open() as handle:
                values = [float(row["val_acc"]) for row in csv.DictReader(handle, delimiter="\t")]
            per_column.setdefault((r.model, result_column(r)), []).append(values)
    curves: dict[str, dict[str, list[float]]] = {}
    for (model, column), runs in per_column.items():
        length = min(len(v) for v in runs)
        curves.setdefault(model, {})[column] = [statistics.fmean(v[i] for v in runs) for i in range(length)]
    return curves


def sample_rows(params: Params) -> list[SampleRow]:
    """For every class: the first real training images, and synthetic ones with their conditioning image."""
    n, paths = params.report.samples_per_class, params.paths
    real = [r for r in read_manifest(paths.prepared).to_pylist() if r["split"] == "train"]
    path_of = {r["id"]: Path(paths.prepared) / r["path"] for r in real}
    synthetic = pq.read_table(Path(paths.synthetic) / "manifest.parquet").to_pylist()
    rows = []
    for label in sorted({r["label"] for r in real}):
        synth = [s for s in synthetic if s["label"] == label][:n]
        rows.append(SampleRow(
            label,
            [Image.open(path_of[r["id"]]) for r in real if r["label"] == label][:n],
            [Image.open(Path(paths.synthetic) / s["path"]) for s in synth],
            [Image.open(path_of[s["cond_id"]]) for s in synth],
        ))
    return rows
