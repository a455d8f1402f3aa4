"""Task of the report stage: read the train stage's results and logs, the quality and filter measures,
the stage times and sample images; the domain (mvcaug.judging.summary, mvcaug.reporting.report) summarises and renders;
write metrics.json, the budget-curve data for `dvc plots`, report.html and report.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.atomic import write_json, write_text
from mvcaug.judging.cells import RunResult
from mvcaug.core.errors import MissingInputError
from mvcaug.io.images import read_image, read_manifest
from mvcaug.core.params import Params
from mvcaug.data.prepare import GROUP_COLUMN
from mvcaug.data.retrieval import has_classes
from mvcaug.reporting.report import (
    DroppedImage, ReportData, SampleRow, mean_validation_curves, pick_dropped, pick_samples, render_html, render_markdown,
)
from mvcaug.io.stage_times import read_stage_times
from mvcaug.io.stored import read_json
from mvcaug.method.replicates import replicate_params
from mvcaug.judging.summary import Replicates, bootstrap_intervals, budget_curves, headline, interval_coverage, summarise
from mvcaug.data.synthetic_sets import MVC, SyntheticSet
from mvcaug.io.synthetic_sets import decision_rows
from mvcaug.io.train_plots import DVCLIVE_CURVES
from mvcaug.io.catalog import FILES

__all__ = ["test_clusters", "report", "publish"]



def read_column(path: Path, column: str, delimiter: str = ",") -> list[float]:
    """One numeric column of a CSV (dvclive's TSV with delimiter tab)."""
    with path.open() as handle:
        return [float(row[column]) for row in csv.DictReader(handle, delimiter=delimiter)]


def validation_logs(params: Params, results: list[RunResult]) -> dict[str, list[float]]:
    """{cell name: validation accuracy per epoch} from the cells' dvclive logs (cells without one are left out)."""
    cells = Path(params.paths.train) / FILES.cells
    logs = {}
    for result in results:
        tsv = cells / result.cell.name / DVCLIVE_CURVES / "val_acc.tsv"
        if tsv.is_file():
            logs[result.cell.name] = read_column(tsv, "val_acc", delimiter="\t")
    return logs


def test_correctness(params: Params, results: list[RunResult]) -> dict[str, np.ndarray]:
    """{cell name: 1.0 / 0.0 per test image, in test-id order} for the cells that stored their predictions."""
    cells = Path(params.paths.train) / FILES.cells
    correct = {}
    for result in results:
        path = cells / result.cell.name / FILES.predictions
        if path.is_file():
            table = pq.read_table(path).sort_by("id")
            correct[result.cell.name] = np.equal(table["truth"].to_numpy(zero_copy_only=False),
                                                 table["predicted"].to_numpy(zero_copy_only=False)).astype(np.float64)
    return correct


def test_clusters(params: Params) -> np.ndarray | None:
    """The group of each test image, in test-id order (the order of the cells' correctness vectors), when the
    image folder named groups (groups.csv: one writer's or one patient's images); None otherwise. An image
    without a group is a cluster alone."""
    manifest = read_manifest(params.paths.prepared)
    if GROUP_COLUMN not in manifest.column_names:
        return None
    rows = sorted((row for row in manifest.to_pylist() if row["split"] == "test"), key=lambda row: row["id"])
    if not any(row[GROUP_COLUMN] for row in rows):
        return None
    return np.array([f"group:{row[GROUP_COLUMN]}" if row[GROUP_COLUMN] else f"image:{row['id']}" for row in rows])


def read_results(params: Params) -> list[RunResult]:
    """The cells' results (results.json of paths.train)."""
    return [RunResult.from_json(r) for r in json.loads((Path(params.paths.train) / FILES.results).read_text())]


def read_replicates(params: Params) -> Replicates:
    """The extra generators' results and per-image correctness (generate.replicates > 1; the replicates stage)."""
    summary = read_json(Path(params.paths.replicates) / FILES.replicates)
    if params.generate.replicates > 1 and (not isinstance(summary, dict) or summary.get("generators") != params.generate.replicates):
        raise MissingInputError(f"{params.paths.replicates}/{FILES.replicates}: not written for generate.replicates "
                                f"{params.generate.replicates}; run the replicates stage first",
                                stage="replicates")
    results, correct = {}, {}
    for generator in range(1, params.generate.replicates):
        own = replicate_params(params, generator)
        results[generator] = read_results(own)
        correct[generator] = test_correctness(own, results[generator])
    return Replicates(results, correct)


def sample_rows(params: Params, decisions: list[dict]) -> list[SampleRow]:
    """For every class: the first real training images, and kept synthetic ones with their conditioning
    image. Every image is read into memory and its file closed at once."""
    paths = params.paths
    manifest = read_manifest(paths.prepared).to_pylist()
    path_of = {r["id"]: Path(paths.prepared) / r["path"] for r in manifest}
    folder = Path(SyntheticSet.named(MVC, paths).folder)
    return [SampleRow(
        pick.label,
        [read_image(path_of[r["id"]]) for r in pick.real],
        [read_image(folder / s["path"]) for s in pick.synthetic],
        [read_image(path_of[s["cond_id"]]) if s["cond_id"] else read_image(folder / s["path"]) for s in pick.synthetic],
    ) for pick in pick_samples(manifest, decisions, params.report.samples_per_class)]


def dropped_images(params: Params, decisions: list[dict]) -> list[DroppedImage]:
    """The first dropped images (flagged ones, with the filter off), spread over the reasons, with their
    class and reason."""
    folder = Path(SyntheticSet.named(MVC, params.paths).folder)
    return [DroppedImage(row["label"], row["reason"], read_image(folder / row["path"])) for row in pick_dropped(decisions)]


def write_budget_plots(folder: Path, budget: dict[str, dict[str, list[tuple]]]) -> None:
    """<folder>/<model>-<synthetic|real|corpus>.csv (images_per_class, accuracy, low, high): one line per file in
    `dvc plots`."""
    for model, curves in budget.items():
        for kind, points in curves.items():
            text = "images_per_class,accuracy,low,high\n" + "".join(
                f"{k},{mean:.6f},{low:.6f},{high:.6f}\n" for k, mean, low, high in points)
            write_text(folder / f"{model}-{kind}.csv", text)


def pretrain_parts(params: Params) -> dict:
    """The pretrain stage's metrics, self-check curve and grids, for ReportData (empty without a pretrained model)."""
    folder = Path(params.paths.pretrain)
    metrics = read_json(folder / FILES.metrics)
    if not metrics or metrics.get("source") == "none":
        return {"pretrain": metrics}
    curve = []
    if (folder / FILES.self_check).is_file():  # pretrain.source folder has no self-check curve
        with open(folder / FILES.self_check, newline="") as handle:
            curve = list(csv.DictReader(handle))
    times_file = Path(params.paths.run) / FILES.self_check_times
    seconds = {}
    if times_file.is_file():  # the run's own record, not an output: absent after a checkout from DVC's cache
        with open(times_file, newline="") as handle:
            seconds = {row["step"]: row["seconds"] for row in csv.DictReader(handle)}
    curve = [{**row, "seconds": seconds.get(row["step"], "")} for row in curve]
    grids = [(caption, read_image(folder / name)) for caption, name in
             (("the corpus (one glyph per column)", FILES.corpus_grid), ("the pretrained model's samples of the same captions' "
              "glyphs (text only)", FILES.samples_grid)) if (folder / name).is_file()]
    return {"pretrain": metrics, "pretrain_curve": curve, "pretrain_grids": grids}


@task(cache_policy=NO_CACHE)
def report(params: Params) -> dict:
    """metrics.json (DVC metrics), the budget curve's CSVs, report.html and report.md; returns the metrics
    and the verdict."""
    paths, images_per_class = params.paths, params.generate.images_per_class
    results, replicates = read_results(params), read_replicates(params)
    metrics = summarise(results, images_per_class, replicates)
    correct, clusters = test_correctness(params, results), test_clusters(params)
    for model, by_column in bootstrap_intervals(results, correct, images_per_class, clusters,
                                                replicates=replicates).items():
        for column, intervals in by_column.items():
            metrics[model][column].update(intervals)
    write_json(paths.metrics, metrics)
    test_images = len(next(iter(correct.values()))) if correct else None
    coverage = interval_coverage(len({r.cell.seed for r in results}), test_images, clustered=clusters is not None,
                                 generators=replicates.generators)
    budget = budget_curves(results, images_per_class, replicates)
    write_budget_plots(Path(paths.report) / FILES.budget, budget)
    decisions = decision_rows(SyntheticSet.named(MVC, paths), paths)
    data = ReportData(
        metrics=metrics, results=results, headline=headline(results, images_per_class, replicates), budget=budget,
        quality=read_json(Path(paths.quality) / FILES.metrics), filter_metrics=read_json(Path(paths.filter) / FILES.metrics),
        stage_times=read_stage_times(Path(paths.run) / FILES.stage_times),
        samples=sample_rows(params, decisions), dropped=dropped_images(params, decisions),
        losses=read_column(Path(paths.model) / FILES.loss, "loss"),
        curves=mean_validation_curves(results, validation_logs(params, results)),
        mix_steps=(params.mix.coarse_steps, params.mix.fine_steps), images_per_class=images_per_class,
        coverage=coverage, **pretrain_parts(params),
        corpus_words=("retrieved real images (train.retrieval_folder)" if has_classes(params.train.retrieval_folder)
                      else ReportData.corpus_words),
    )
    write_text(Path(paths.report) / FILES.report_html, render_html(data))
    write_text(Path(paths.report) / FILES.report_md, render_markdown(data))
    return {"metrics": metrics, "verdict": data.headline.sentence if data.headline else ""}


@task(cache_policy=NO_CACHE)
def publish(params: Params, verdict: str) -> None:
    """The Markdown report (verdict first) and a link to the HTML report as Prefect artifacts, for the UI."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    folder = Path(params.paths.report)
    create_markdown_artifact(markdown=(folder / FILES.report_md).read_text(), key="mvcaug-metrics",
                             description=verdict or "Test accuracy per training set and synthetic-set quality")
    create_link_artifact(link=(folder / FILES.report_html).resolve().as_uri(),
                         link_text=f"{FILES.report_html} (real vs synthetic grid)",
                         key="mvcaug-report", description="The offline HTML report")
