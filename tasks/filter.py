"""Tasks of the filter stage: train the real-only classifier the filter (and the quality stage) scores
with, then score and decide every synthetic image of each set, and write the decisions.

Nothing is deleted: `<paths.filter>/<set>.parquet` is the set's manifest plus `kept`, `reason` and the
scores, and the train stage reads the kept rows. The classifier never sees the test split: it trains on
the real training split, picks its epoch on the validation split, and is saved for the quality stage.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.atomic import write_json, write_parquet
from mvcaug.judging.cells import Cell
from mvcaug.models.classifiers import load_classifier, save_classifier
from mvcaug.judging.filter import CLASSIFIER, count_decisions, filter_synthetic, label_scorer
from mvcaug.data.images import ImageSet, load_images, read_manifest
from mvcaug.core.params import Params
from mvcaug.judging.quality import classifier_feature_fns
from mvcaug.data.synthetic_sets import SyntheticSet, manifest_rows
from mvcaug.judging.train import TrainingData, fit_cell

log = logging.getLogger("mvcaug.judging.filter")


def real_splits(params: Params) -> tuple[ImageSet, ImageSet]:
    """(the real training split, the validation split)."""
    paths, channels = params.paths, params.prepare.channels
    manifest = read_manifest(paths.prepared)
    return tuple(load_images(paths.prepared, manifest.filter(pc.equal(manifest["split"], name)).to_pylist(), channels)
                 for name in ("train", "val"))


def classifier_folder(params: Params) -> Path:
    return Path(params.paths.filter) / CLASSIFIER


@task(cache_policy=NO_CACHE)
def train_real_classifier(params: Params) -> dict:
    """Train the first model of train.models on the real training split only (default augmentation, seed 0,
    epoch chosen on validation, no test split) and save it; returns its config."""
    real, val = real_splits(params)
    classes = sorted(set(real.labels))
    no_test = real.subset([])
    model_name = params.train.models[0]
    grid = replace(params.train, strategies=("real",), baselines=("default",))
    result, model = fit_cell(Cell(model_name, "default", "real", 0), TrainingData(real, val, no_test, classes), grid)
    settings = params.train.model_settings[model_name]
    config = {"model": model_name, "classes": classes, "channels": params.prepare.channels,
              "kwargs": {"width": settings.width} if model_name == "small_cnn" else {},
              "image_size": settings.image_size, "val_acc": result.val_acc, "best_epoch": result.best_epoch}
    save_classifier(model, classifier_folder(params), config)
    return config


@task(cache_policy=NO_CACHE, task_run_name="filter-{set_name}")
def filter_set(params: Params, set_name: str) -> dict:
    """Score and decide every image of one synthetic set; write <paths.filter>/<set>.parquet; returns counts."""
    synthetic_set = SyntheticSet.named(set_name, params.paths)
    rows = manifest_rows(synthetic_set)
    out = Path(params.paths.filter) / f"{set_name}.parquet"
    if not rows:
        write_parquet(out, pa.Table.from_pylist([]))
        return {"thresholds": {}, "counts": {}}
    real, val = real_splits(params)
    synthetic = load_images(synthetic_set.folder, rows, params.prepare.channels, id_key="path")
    model, config = load_classifier(classifier_folder(params))
    feature_fn, predict_fn = classifier_feature_fns(model)
    with torch.inference_mode():
        result = filter_synthetic(label_scorer(params.filter, predict_fn), synthetic.pixels, synthetic.labels,
                                  real.pixels, val.pixels, val.labels, config["classes"], params.filter,
                                  feature_fn=feature_fn)
    decided = []
    for row, record in zip(rows, result.records):
        decided.append({**row, "kept": record.kept, "reason": record.reason, "confidence": record.confidence,
                        "nearest_real_distance": record.nearest_real_distance,
                        "nearest_real_id": real.ids[record.nearest_real_index],
                        "nearest_synthetic_distance": record.nearest_synthetic_distance,
                        "nearest_synthetic_path": (rows[record.nearest_synthetic_index]["path"]
                                                   if record.nearest_synthetic_index is not None else None)})
    write_parquet(out, pa.Table.from_pylist(decided))
    thresholds = {name: asdict(getattr(result.thresholds, name)) for name in ("confidence", "near_copy", "near_duplicate")}
    for threshold in thresholds.values():  # JSON has no NaN: an uncalibrated threshold is null
        threshold["value"] = threshold["value"] if math.isfinite(threshold["value"]) else None
    return {"thresholds": thresholds, "counts": count_decisions(result.records)}


@task(cache_policy=NO_CACHE)
def write_filter_metrics(params: Params, classifier: dict, by_set: dict[str, dict]) -> dict:
    """<paths.filter>/metrics.json: kept and dropped counts per set, class and reason, the thresholds and
    the classifier's validation accuracy (DVC metrics: `dvc metrics diff` shows what the filter did)."""
    metrics = {"classifier": {"model": classifier["model"], "val_acc": classifier["val_acc"]},
               **{name: {"counts": found["counts"], "thresholds": {k: v["value"] for k, v in found["thresholds"].items()}}
                  for name, found in by_set.items()},
               "enabled": params.filter.enabled}
    write_json(Path(params.paths.filter) / "metrics.json", metrics)
    write_json(Path(params.paths.filter) / "thresholds.json", {name: found["thresholds"] for name, found in by_set.items()})
    return metrics
