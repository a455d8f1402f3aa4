"""Task of the report stage: read the train stage's results and logs, the quality measures and sample
images; the domain (mvcaug/report.py) summarises and renders; write metrics.json, report.html, report.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.atomic import write_json, write_text
from mvcaug.images import read_image, read_manifest
from mvcaug.params import Params
from mvcaug.report import SampleRow, mean_validation_curves, metrics_markdown, render_html, summarise
from mvcaug.stored import read_json
from mvcaug.synthetic_sets import MVC, SyntheticSet, manifest_rows
from mvcaug.cells import RunResult
from mvcaug.train_plots import DVCLIVE_CURVES


def read_column(path: Path, column: str, delimiter: str = ",") -> list[float]:
    """One numeric column of a CSV (dvclive's TSV with delimiter tab)."""
    with path.open() as handle:
        return [float(row[column]) for row in csv.DictReader(handle, delimiter=delimiter)]


def validation_logs(params: Params, results: list[RunResult]) -> dict[str, list[float]]:
    """{cell name: validation accuracy per epoch} from the cells' dvclive logs (cells without one are left out)."""
    cells = Path(params.paths.train) / "cells"
    logs = {}
    for result in results:
        tsv = cells / result.cell.name / DVCLIVE_CURVES / "val_acc.tsv"
        if tsv.is_file():
            logs[result.cell.name] = read_column(tsv, "val_acc", delimiter="\t")
    return logs


def sample_rows(params: Params) -> list[SampleRow]:
    """For every class: the first real training images, and synthetic ones with their conditioning image.
    Every image is read into memory and its file closed at once."""
    n, paths = params.report.samples_per_class, params.paths
    real = [r for r in read_manifest(paths.prepared).to_pylist() if r["split"] == "train"]
    path_of = {r["id"]: Path(paths.prepared) / r["path"] for r in real}
    synthetic_set = SyntheticSet.named(MVC, paths)
    synthetic = manifest_rows(synthetic_set)
    rows = []
    for label in sorted({r["label"] for r in real}):
        synth = [s for s in synthetic if s["label"] == label][:n]
        rows.append(SampleRow(
            label,
            [read_image(path_of[r["id"]]) for r in real if r["label"] == label][:n],
            [read_image(Path(synthetic_set.folder) / s["path"]) for s in synth],
            [read_image(path_of[s["cond_id"]]) for s in synth],
        ))
    return rows


@task(cache_policy=NO_CACHE)
def report(params: Params) -> dict:
    """metrics.json (DVC metrics), report.html (tables, per-class grid, curves) and report.md."""
    paths = params.paths
    results = [RunResult.from_json(r) for r in json.loads((Path(paths.train) / "results.json").read_text())]
    metrics = summarise(results)
    write_json(paths.metrics, metrics)
    quality = read_json(Path(paths.quality) / "metrics.json")
    losses = read_column(Path(paths.model) / "loss.csv", "loss")
    mix_steps = (params.mix.coarse_steps, params.mix.fine_steps)
    html = render_html(metrics, results, sample_rows(params), losses, quality,
                       curves=mean_validation_curves(results, validation_logs(params, results)), mix_steps=mix_steps)
    write_text(Path(paths.report) / "report.html", html)
    markdown = metrics_markdown(metrics, mix_steps, quality)
    write_text(Path(paths.report) / "report.md",
               "# mvcaug report\n\n" + markdown + "\nSample grids and curves: report.html, beside this file.\n")
    return metrics

