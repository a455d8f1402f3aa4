"""Which synthetic images to keep: drop those of the wrong class, near-copies of a training image and
near-duplicates of one another, each with its reason, by thresholds chosen on real validation images.

A generator fine-tuned on a handful of images per class copies them (on the default run 40% of the
synthetic images are within pixel RMSE 0.1 of a training image): such images add no new view of the
class, and a classifier trained on them sees its training images twice. Every synthetic image gets
three scores:

- confidence: a LabelScorer's probability of its intended class (the classifier trained on the real
  training split by default; an image-text model such as CLIP when one is given);
- nearest_real_distance: RMSE to its nearest real training image, in pixels or a feature space;
- nearest_synthetic_distance: RMSE to the nearest synthetic image of its class kept before it (greedy in
  the order given, so of a group of duplicates the first one stays).

Each threshold is a quantile of the same score on real validation images (never the test split): a
synthetic image is dropped when it is less confident, or closer to a training image or to a kept
sibling, than almost any unseen real image is. Everything here is pure: tensors and callables in,
numbers and decisions out.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.special
import torch

from mvcaug.core.errors import UserError
from mvcaug.core.params import Baseline, FilterParams, Strategy, TrainParams
from mvcaug.judging.cells import Cell
from mvcaug.judging.quality import TensorFn, extract, nearest_neighbours

__all__ = ["FilterError", "ClassifierScorer", "label_scorer", "Threshold", "Thresholds", "FilterResult", "embed",
    "true_class_probability", "calibrate_thresholds", "decide", "filter_synthetic", "count_decisions",
    "real_only_classifier", "decided_rows", "thresholds_json"]

log = logging.getLogger(__name__)

REASONS = ("low_confidence", "near_copy", "near_duplicate")
"""Why an image is dropped, in the order the tests are checked: an image failing several gets the first."""
KEPT = "kept"
"""The count_decisions key of kept images."""


class FilterError(UserError, ValueError):
    """The validation split cannot calibrate a filter threshold."""


class LabelScorer(Protocol):
    """Class probabilities of images: what the confidence test reads. Implement it to plug in a model."""

    name: str
    """Names the scorer in the thresholds' provenance, e.g. "classifier" or "clip:<folder>"."""

    def __call__(self, pixels: torch.Tensor, classes: Sequence[str]) -> np.ndarray:
        """(n, C, H, W) images in [-1, 1] and the K class names -> (n, K) probabilities, rows summing to 1."""
        ...


class ClassifierScorer:
    """The softmax of a classifier's logits: a predict_fn from mvcaug.judging.quality.classifier_feature_fns, whose
    outputs follow the order of `classes`."""

    name = "classifier"  # catalog-exempt: the scorer's name in the thresholds' provenance

    def __init__(self, predict_fn: TensorFn, batch_size: int = 256):
        self.predict_fn = predict_fn
        self.batch_size = batch_size

    def __call__(self, pixels: torch.Tensor, classes: Sequence[str]) -> np.ndarray:
        logits = extract(self.predict_fn, pixels, self.batch_size)
        if logits.shape[1] != len(classes):
            raise ValueError(f"the classifier scores {logits.shape[1]} classes, expected {len(classes)}")
        return scipy.special.softmax(logits, axis=1)


def label_scorer(params: FilterParams, predict_fn: TensorFn, device: str = "auto",
                 batch_size: int = 256) -> LabelScorer:
    """The scorer params ask for: zero-shot CLIP from filter.clip_model when set, else the classifier."""
    if params.clip_model:
        from mvcaug.judging.clip_scores import ClipScorer  # transformers only when asked for

        return ClipScorer(params.clip_model, device=device, batch_size=batch_size)
    return ClassifierScorer(predict_fn, batch_size)


@dataclass(frozen=True)
class Threshold:
    """One threshold and how the validation split gave it."""

    value: float
    """An image scoring below this fails the test."""
    quantile: float
    """The params quantile the value is, of the validation values."""
    n_values: int
    """How many validation values the quantile was taken over."""
    left_out: int
    """Validation distances of exactly 0 left out: exact copies between real images are no "distinct" pair."""
    measure: str
    """What the validation values are."""


@dataclass(frozen=True)
class Thresholds:
    """The three thresholds, as chosen on the validation split."""

    confidence: Threshold
    near_copy: Threshold
    near_duplicate: Threshold


@dataclass(frozen=True)
class FilterRecord:
    """One synthetic image's scores and decision; indices point into the arrays the filter was given."""

    label: str
    """Its intended class."""
    confidence: float
    """The scorer's probability of the intended class."""
    nearest_real_distance: float
    """RMSE to the nearest real training image (in the filter's space)."""
    nearest_real_index: int
    """Which training image that is."""
    nearest_synthetic_distance: float | None
    """RMSE to the nearest synthetic image of its class kept before it; None when none was."""
    nearest_synthetic_index: int | None
    """Which synthetic image that is; None when none was."""
    kept: bool
    """Whether the image goes on to training."""
    reason: str
    """"" when kept, else the first failed test of REASONS."""


@dataclass(frozen=True)
class FilterResult:
    """Per-image records, in the order of the synthetic images, and the thresholds they were judged by."""

    records: list[FilterRecord]
    thresholds: Thresholds


def embed(pixels: torch.Tensor, space: str, feature_fn: TensorFn | None = None, batch_size: int = 256) -> torch.Tensor:
    """The (n, d) vectors distances are measured between: flattened pixels, or feature_fn's features."""
    if space == "pixels":
        return pixels.flatten(1)
    if space == "features":
        if feature_fn is None:
            raise ValueError("filter.space=features needs a feature_fn (the real-only classifier's)")
        return torch.from_numpy(extract(feature_fn, pixels, batch_size))
    raise ValueError(f"filter.space must be pixels or features, got {space!r}")


def rmse_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) RMSE between rows, exact (0 for copies): cdist without its matrix-product shortcut."""
    distance = torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")
    return distance / math.sqrt(a.shape[1])


def within_class_nearest(vectors: torch.Tensor, labels: Sequence[str]) -> np.ndarray:
    """Each row's RMSE to its nearest *other* row of the same class; inf for a class's only row."""
    label_array = np.asarray(labels)
    nearest = np.full(len(vectors), np.inf)
    for label in dict.fromkeys(labels):
        members = np.flatnonzero(label_array == label)
        distances = rmse_matrix(vectors[members], vectors[members]).fill_diagonal_(math.inf)
        nearest[members] = distances.min(1).values.numpy()
    return nearest


def true_class_probability(scorer: LabelScorer, pixels: torch.Tensor, labels: Sequence[str],
                           classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each image's probability of its label, and whether that label is the scorer's top class."""
    targets = _targets(labels, classes)
    probabilities = np.asarray(scorer(pixels, classes), dtype=np.float64)
    if probabilities.shape != (len(pixels), len(classes)) or not np.isfinite(probabilities).all() \
            or not np.allclose(probabilities.sum(1), 1.0, atol=1e-4):
        raise ValueError(f"scorer {scorer.name!r}: expected ({len(pixels)}, {len(classes)}) probabilities with rows "
                         f"summing to 1, got shape {probabilities.shape}")
    rows = np.arange(len(targets))
    return probabilities[rows, targets], probabilities.argmax(1) == targets


def quantile_threshold(values: np.ndarray, quantile: float, measure: str, key: str,
                       leave_out_zeros: bool = False) -> Threshold:
    """np.quantile (linear) of the finite values; a distance of 0 is an exact copy, not a calibration value."""
    values = values[np.isfinite(values)]
    zeros = int((values == 0).sum()) if leave_out_zeros else 0
    if zeros:
        log.warning("filter: %d validation distances are exact copies (0), left out of %s; deduplicate the "
                    "dataset", zeros, key)
        values = values[values != 0]
    if len(values) == 0:
        raise FilterError(f"{key}: no validation values to take the quantile of ({measure}); give each class at "
                          "least 2 validation images (prepare.val_per_class) or set filter.enabled: false")
    return Threshold(float(np.quantile(values, quantile)), quantile, len(values), zeros, measure)


def _targets(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"labels must name one of `classes`; unknown: {unknown}")
    return np.array([index[label] for label in labels], dtype=np.int64)


def calibrate(scorer: LabelScorer, val_pixels: torch.Tensor, val_labels: Sequence[str], val_vectors: torch.Tensor,
              train_vectors: torch.Tensor, classes: Sequence[str], params: FilterParams,
              batch_size: int = 256) -> Thresholds:
    """The three thresholds from validation images (vectors from `embed` in params.space)."""
    probability, correct = true_class_probability(scorer, val_pixels, val_labels, classes)
    if not correct.any():
        raise FilterError(f"filter.confidence_quantile: the {scorer.name} scorer classifies no validation image "
                          "correctly, so there is nothing to calibrate on; use a working classifier or "
                          "filter.clip_model, or set filter.enabled: false")
    space = params.space
    return Thresholds(
        confidence=quantile_threshold(
            probability[correct], params.confidence_quantile,
            f"{scorer.name} probability of the true class, correctly classified validation images",
            "filter.confidence_quantile"),
        near_copy=quantile_threshold(
            nearest_neighbours(val_vectors, train_vectors, batch_size)[0], params.near_copy_quantile,
            f"{space} RMSE of each validation image to its nearest training image",
            "filter.near_copy_quantile", leave_out_zeros=True),
        near_duplicate=quantile_threshold(
            within_class_nearest(val_vectors, val_labels), params.duplicate_quantile,
            f"{space} RMSE of each validation image to its nearest other validation image of its class",
            "filter.duplicate_quantile", leave_out_zeros=True),
    )


def uncalibrated(params: FilterParams, why: str) -> Thresholds:
    """Thresholds that are none (NaN): a switched-off filter on a validation split too small to calibrate."""
    def none(quantile: float) -> Threshold:
        return Threshold(math.nan, quantile, 0, 0, f"not calibrated: {why}")

    return Thresholds(none(params.confidence_quantile), none(params.near_copy_quantile),
                      none(params.duplicate_quantile))


def calibrate_thresholds(scorer: LabelScorer, train_pixels: torch.Tensor, val_pixels: torch.Tensor,
                         val_labels: Sequence[str], classes: Sequence[str], params: FilterParams,
                         feature_fn: TensorFn | None = None, batch_size: int = 256) -> Thresholds:
    """The three thresholds from the real training and validation images alone (no synthetic ones)."""
    train_vectors, val_vectors = (embed(x, params.space, feature_fn, batch_size) for x in (train_pixels, val_pixels))
    return calibrate(scorer, val_pixels, val_labels, val_vectors, train_vectors, classes, params, batch_size)


def decide(labels: Sequence[str], confidence: np.ndarray, nearest_real_distance: np.ndarray,
           nearest_real_index: np.ndarray, vectors: torch.Tensor, thresholds: Thresholds,
           enabled: bool = True) -> list[FilterRecord]:
    """Keep, or drop with the first failed test of REASONS. Disabled, every image is kept and `reason` says
    what the filter would have dropped it for (so a user sees what switching it on would do); the
    nearest kept sibling is then measured among all images, since all are kept.

    Duplicates are greedy in index order within each class: an image is compared with the images of its
    class kept before it, so of identical images the first stays, and one dropped for an earlier reason
    is no reference for later ones."""
    if not enabled:
        flagged = decide(labels, confidence, nearest_real_distance, nearest_real_index, vectors, thresholds)
        kept_all = _decide(labels, confidence, nearest_real_distance, nearest_real_index, vectors, thresholds, False)
        return [dataclasses.replace(record, reason=would.reason) for record, would in zip(kept_all, flagged)]
    return _decide(labels, confidence, nearest_real_distance, nearest_real_index, vectors, thresholds, True)


def _decide(labels: Sequence[str], confidence: np.ndarray, nearest_real_distance: np.ndarray,
            nearest_real_index: np.ndarray, vectors: torch.Tensor, thresholds: Thresholds,
            enabled: bool) -> list[FilterRecord]:
    # 1. the tests that do not depend on other synthetic images
    reasons = [""] * len(labels)
    if enabled:
        for k in range(len(labels)):
            if confidence[k] < thresholds.confidence.value:
                reasons[k] = "low_confidence"
            elif nearest_real_distance[k] < thresholds.near_copy.value:
                reasons[k] = "near_copy"
    # 2. near-duplicates, class by class in index order
    sibling_distance: list[float | None] = [None] * len(labels)
    sibling_index: list[int | None] = [None] * len(labels)
    label_array = np.asarray(labels)
    for label in dict.fromkeys(labels):
        members = np.flatnonzero(label_array == label)
        distances = rmse_matrix(vectors[members], vectors[members]).numpy()
        kept: list[int] = []  # positions in `members`
        for position, i in enumerate(members):
            if kept:
                closest = kept[int(np.argmin(distances[position, kept]))]
                distance = float(distances[position, closest])
                sibling_distance[i], sibling_index[i] = distance, int(members[closest])
                if enabled and not reasons[i] and distance < thresholds.near_duplicate.value:
                    reasons[i] = "near_duplicate"
            if not reasons[i]:
                kept.append(position)
    return [
        FilterRecord(str(labels[i]), float(confidence[i]), float(nearest_real_distance[i]),
                     int(nearest_real_index[i]), sibling_distance[i], sibling_index[i], not reasons[i], reasons[i])
        for i in range(len(labels))
    ]


def filter_synthetic(
    scorer: LabelScorer,
    synthetic_pixels: torch.Tensor,
    synthetic_labels: Sequence[str],
    train_pixels: torch.Tensor,
    val_pixels: torch.Tensor,
    val_labels: Sequence[str],
    classes: Sequence[str],
    params: FilterParams,
    feature_fn: TensorFn | None = None,
    batch_size: int = 256,
) -> FilterResult:
    """Score every synthetic image, calibrate the thresholds on validation, and decide.

    train_* is the real training split (what the generator and the classifier saw); val_* the real
    validation split; the test split is no input. Pass the synthetic images in a fixed order (by id):
    near-duplicates keep the first of a group."""
    # 1. check inputs
    if len(synthetic_pixels) != len(synthetic_labels) or len(val_pixels) != len(val_labels):
        raise ValueError("one label per image is needed, for synthetic and validation images")
    if len(synthetic_pixels) == 0 or len(train_pixels) == 0:
        raise ValueError("the filter needs synthetic and real training images")
    shapes = {tuple(x.shape[1:]) for x in (synthetic_pixels, train_pixels, val_pixels)}
    if params.space == "pixels" and len(shapes) > 1:
        raise ValueError(f"image shapes differ: {sorted(shapes)}; resize the synthetic images to the real ones")
    # 2. every set in the distance space, once
    train_vectors, val_vectors, synthetic_vectors = (
        embed(x, params.space, feature_fn, batch_size) for x in (train_pixels, val_pixels, synthetic_pixels))
    # 3. thresholds from the validation split (switched off, a split too small to calibrate is no error)
    try:
        thresholds = calibrate(scorer, val_pixels, val_labels, val_vectors, train_vectors, classes, params, batch_size)
    except FilterError as err:
        if params.enabled:
            raise
        log.warning("filter.enabled is false and the thresholds cannot be calibrated (%s); scores only", err)
        thresholds = uncalibrated(params, str(err))
    # 4. synthetic scores and decisions
    confidence, _ = true_class_probability(scorer, synthetic_pixels, synthetic_labels, classes)
    distance, index = nearest_neighbours(synthetic_vectors, train_vectors, batch_size)
    records = decide(synthetic_labels, confidence, distance, index, synthetic_vectors, thresholds, params.enabled)
    counts = count_decisions(records)["_all"]
    log.info("filter: kept %d of %d synthetic images (%s)", counts[KEPT], len(records),
             ", ".join(f"{reason} {counts[reason]}" for reason in REASONS))
    return FilterResult(records, thresholds)


def count_decisions(records: Sequence[FilterRecord]) -> dict[str, dict[str, int]]:
    """Per class (sorted) and "_all": {"kept", "low_confidence", "near_copy", "near_duplicate", "total"}.
    A reason counts the images it dropped, or, with the filter off, the kept images it flags."""
    per_class: dict[str, Counter] = {label: Counter() for label in sorted({r.label for r in records})}
    for record in records:
        counts = per_class[record.label]
        counts["total"] += 1
        counts[KEPT] += record.kept
        if record.reason:
            counts[record.reason] += 1
    per_class["_all"] = sum(per_class.values(), Counter())
    keys = (KEPT, *REASONS, "total")
    return {label: {key: counts[key] for key in keys} for label, counts in per_class.items()}


def real_only_classifier(train: TrainParams) -> tuple[Cell, TrainParams]:
    """(the cell, the grid) the filter's classifier trains as: the first of train.models with its own settings, on
    real images with the default augmentation and seed 0. It judges synthetic images, so it must never have seen
    one; and it is the train stage's plain real-only cell, so its confidence is that of the classifier the
    synthetic images are meant to help, not of one trained some other way."""
    baseline: Baseline = "default"
    strategy: Strategy = "real"
    cell = Cell(train.models[0], baseline, strategy, 0)
    return cell, dataclasses.replace(train, strategies=(strategy,), baselines=(baseline,))


def decided_rows(rows: Sequence[Mapping], records: Sequence[FilterRecord], real_ids: Sequence[str]) -> list[dict]:
    """Each synthetic image's manifest row (in `rows`' order, the order the filter was given) with its record:
    the decision, the scores, and the nearest images named by their ids in the data (a real image's id in
    `real_ids`, the training split the filter measured against; a synthetic image's path in `rows`), not by the
    array positions `decide` works with, which mean nothing once the arrays are gone."""
    if len(rows) != len(records):
        raise ValueError(f"one record per manifest row is needed: {len(rows)} rows, {len(records)} records")
    return [{**row, "kept": record.kept, "reason": record.reason, "confidence": record.confidence,
             "nearest_real_distance": record.nearest_real_distance,
             "nearest_real_id": real_ids[record.nearest_real_index],
             "nearest_synthetic_distance": record.nearest_synthetic_distance,
             "nearest_synthetic_path": (rows[record.nearest_synthetic_index]["path"]
                                        if record.nearest_synthetic_index is not None else None)}
            for row, record in zip(rows, records)]


def thresholds_json(thresholds: Thresholds) -> dict[str, dict]:
    """{test: the Threshold's fields} for thresholds.json and the stage's metrics: an uncalibrated threshold (NaN,
    a switched-off filter on a split too small) is null, since JSON has no NaN."""
    found = {name: dataclasses.asdict(getattr(thresholds, name)) for name in ("confidence", "near_copy", "near_duplicate")}
    for threshold in found.values():
        threshold["value"] = threshold["value"] if math.isfinite(threshold["value"]) else None
    return found
