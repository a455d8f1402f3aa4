"""Tasks of the filter stage: train the real-only classifier the filter (and the quality stage) scores
with, then score and decide every synthetic image of each set, and write the decisions.

Nothing is deleted: `<paths.filter>/<set>.parquet` is the set's manifest plus `kept`, `reason` and the
scores, and the train stage reads the kept rows. The classifier never sees the test split: it trains on
the real training split, picks its epoch on the validation split, and is saved for the quality stage.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.atomic import write_json, write_parquet
from mvcaug.io.classifiers import load_classifier, save_classifier
from mvcaug.data.images import ImageSet
from mvcaug.io.images import load_images, load_splits
from mvcaug.core.params import Params
from mvcaug.data.synthetic_sets import SyntheticSet, decisions_file
from mvcaug.io.synthetic_sets import manifest_rows
from mvcaug.io.catalog import FILES

__all__ = ["classifier_folder", "train_real_classifier", "filter_set", "write_filter_metrics"]

log = logging.getLogger("mvcaug.judging.filter")


def real_splits(params: Params) -> tuple[ImageSet, ImageSet]:
    """(the real training split, the validation split)."""
    splits = load_splits(params.paths.prepared, ("train", "val"), params.prepare.channels)
    return splits["train"], splits["val"]


def classifier_folder(params: Params) -> Path:
    return Path(params.paths.filter) / FILES.classifier


@task(cache_policy=NO_CACHE)
def train_real_classifier(params: Params) -> dict:
    """Train the first model of train.models on the real training split only (default augmentation, seed 0,
    epoch chosen on validation, no test split) and save it; returns its config."""
    from mvcaug.judging.filter import real_only_classifier
    from mvcaug.judging.train import TrainingData, fit_cell
    from mvcaug.models.classifiers import classifier_kwargs

    real, val = real_splits(params)
    classes = sorted(set(real.labels))
    no_test = real.subset([])
    cell, grid = real_only_classifier(params.train)
    model_name = cell.model
    result, model = fit_cell(cell, TrainingData(real, val, no_test, classes), grid)
    settings = params.train.model_settings[model_name]
    config = {"model": model_name, "classes": classes, "channels": params.prepare.channels,
              "kwargs": classifier_kwargs(model_name, settings),
              "image_size": settings.image_size, "val_acc": result.val_acc, "best_epoch": result.best_epoch}
    save_classifier(model, classifier_folder(params), config)
    return config


@task(cache_policy=NO_CACHE, task_run_name="filter-{set_name}")
def filter_set(params: Params, set_name: str) -> dict:
    """Score and decide every image of one synthetic set; write <paths.filter>/<set>.parquet; returns counts."""
    import torch
    from mvcaug.judging.filter import count_decisions, decided_rows, filter_synthetic, label_scorer, thresholds_json
    from mvcaug.judging.quality import classifier_feature_fns

    synthetic_set = SyntheticSet.named(set_name, params.paths)
    rows = manifest_rows(synthetic_set)
    out = decisions_file(synthetic_set, params.paths)
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
    write_parquet(out, pa.Table.from_pylist(decided_rows(rows, result.records, real.ids)))
    return {"thresholds": thresholds_json(result.thresholds), "counts": count_decisions(result.records)}


@task(cache_policy=NO_CACHE)
def write_filter_metrics(params: Params, classifier: dict, by_set: dict[str, dict]) -> dict:
    """<paths.filter>/metrics.json: kept and dropped counts per set, class and reason, the thresholds and
    the classifier's validation accuracy (DVC metrics: `dvc metrics diff` shows what the filter did)."""
    metrics = {"classifier": {"model": classifier["model"], "val_acc": classifier["val_acc"]},
               **{name: {"counts": found["counts"], "thresholds": {k: v["value"] for k, v in found["thresholds"].items()}}
                  for name, found in by_set.items()},
               "enabled": params.filter.enabled}
    write_json(Path(params.paths.filter) / FILES.metrics, metrics)
    write_json(Path(params.paths.filter) / FILES.thresholds, {name: found["thresholds"] for name, found in by_set.items()})
    return metrics
