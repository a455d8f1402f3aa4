"""The synthetic-image filter on real small data: scikit-learn's digits at 16 px, a SmallCNN trained on
the real training split only (the train stage's fit_cell), and a tiny random CLIP saved to a folder."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import torch

from mvcaug.core.errors import UserError
from mvcaug.judging.filter import (
    ClassifierScorer,
    FilterError,
    FilterResult,
    Threshold,
    Thresholds,
    calibrate_thresholds,
    count_decisions,
    decide,
    decided_rows,
    embed,
    filter_synthetic,
    label_scorer,
    real_only_classifier,
    thresholds_json,
    true_class_probability,
)
from mvcaug.core.params import FilterParams, ModelSettings, ParamsError, TrainParams, params_from_dict
from mvcaug.judging.quality import classifier_feature_fns
from mvcaug.judging.cells import Cell
from mvcaug.judging.train import TrainingData, fit_cell
from tests.sd_checkpoint import MAX_TOKENS, write_tokenizer
from tests.train_cells import digits_data



@pytest.fixture(scope="module")
def data() -> TrainingData:
    """300 training, 200 validation and 100 test digits (consecutive slices, every class in each)."""
    return digits_data(n_train=300, n_val=200, n_test=100)


@pytest.fixture(scope="module")
def classifier(data):
    """(feature_fn, predict_fn) of a SmallCNN trained on the training split alone (about 0.88 on validation)."""
    grid = TrainParams(strategies=("real",), seeds=(0,),
                       model_settings={"small_cnn": ModelSettings(epochs=20, batch_size=32, width=16,
                                                                  learning_rate=5e-3)})
    _, model = fit_cell(Cell("small_cnn", "default", "real", 0), data, grid)
    return classifier_feature_fns(model)


@pytest.fixture(scope="module")
def scorer(classifier) -> ClassifierScorer:
    return ClassifierScorer(classifier[1])


def run_filter(scorer, data: TrainingData, pixels: torch.Tensor, labels: list[str], feature_fn=None,
               **changes) -> FilterResult:
    """filter_synthetic against the real training and validation splits, with FilterParams changed by `changes`."""
    params = dataclasses.replace(FilterParams(), **changes)
    return filter_synthetic(scorer, pixels, labels, data.real.pixels, data.val.pixels, data.val.labels,
                            data.classes, params, feature_fn=feature_fn)


def confident_val_images(scorer, data: TrainingData, label: str, count: int) -> list[int]:
    """The first `count` validation images of `label` the classifier gives that class with p > 0.9."""
    probability, correct = true_class_probability(scorer, data.val.pixels, data.val.labels, data.classes)
    chosen = [i for i in data.val.of_class(label) if correct[i] and probability[i] > 0.9][:count]
    assert len(chosen) == count, f"the classifier is not confident on {count} validation {label}s"
    return chosen


def test_an_exact_copy_of_a_training_image_is_a_near_copy_a_shifted_or_flipped_one_is_not(scorer, data):
    train = data.real
    shifted = torch.roll(train.pixels[0], 1, dims=-1)  # a zero, one pixel to the right
    flipped = train.pixels[8].flip(-1)  # an eight, mirrored
    pixels = torch.stack([train.pixels[1], train.pixels[2], shifted, flipped])
    labels = [train.labels[i] for i in (1, 2, 0, 8)]
    result = run_filter(scorer, data, pixels, labels)
    copies, moved = result.records[:2], result.records[2:]
    assert [(r.reason, r.nearest_real_distance, r.nearest_real_index) for r in copies] == \
        [("near_copy", 0.0, 1), ("near_copy", 0.0, 2)]
    assert all(r.confidence >= result.thresholds.confidence.value for r in copies)  # not dropped for that first
    assert [(r.kept, r.reason) for r in moved] == [(True, ""), (True, "")]
    assert all(r.nearest_real_distance > result.thresholds.near_copy.value for r in moved)
    # pixel RMSE sees no training image shifted by one pixel as a copy
    every_shift = run_filter(scorer, data, torch.roll(train.pixels, 1, dims=-1), train.labels)
    assert not any(r.reason == "near_copy" for r in every_shift.records)


def test_of_two_identical_synthetic_images_the_first_is_kept(scorer, data):
    first, other = confident_val_images(scorer, data, "two", 2)
    pixels = data.val.pixels[[first, other, first]]
    result = run_filter(scorer, data, pixels, ["two"] * 3)
    kept, different, copy = result.records
    assert (kept.kept, kept.nearest_synthetic_distance, kept.nearest_synthetic_index) == (True, None, None)
    assert different.kept and different.nearest_synthetic_index == 0
    assert different.nearest_synthetic_distance > result.thresholds.near_duplicate.value
    assert (copy.kept, copy.reason, copy.nearest_synthetic_distance) == (False, "near_duplicate", 0.0)
    assert copy.nearest_synthetic_index == 0  # the first of the two, not the other image
    # another class is never a duplicate
    across = run_filter(scorer, data, pixels[[0, 0]], ["two", "three"])
    assert across.records[1].nearest_synthetic_distance is None


def test_an_image_confidently_of_another_class_is_low_confidence(scorer, data):
    (three,) = confident_val_images(scorer, data, "three", 1)
    pixels = data.val.pixels[[three, three]]
    # separate runs: within one run the correctly labelled copy would be a near-duplicate reference
    wrong = run_filter(scorer, data, pixels[:1], ["seven"]).records[0]
    right = run_filter(scorer, data, pixels[:1], ["three"]).records[0]
    assert (wrong.kept, wrong.reason) == (False, "low_confidence") and wrong.confidence < 0.1
    assert (right.kept, right.reason) == (True, "") and right.confidence > 0.9


def test_thresholds_are_quantiles_of_the_validation_split(scorer, classifier, data):
    params = FilterParams(confidence_quantile=0.05, near_copy_quantile=0.01, duplicate_quantile=0.2)
    thresholds = calibrate_thresholds(scorer, data.real.pixels, data.val.pixels, data.val.labels, data.classes, params)
    # brute force, straight from the definitions
    probabilities = scipy.special.softmax(classifier[1](data.val.pixels).detach().double().numpy(), axis=1)
    targets = np.array([data.classes.index(label) for label in data.val.labels])
    correct = probabilities.argmax(1) == targets
    val, train = data.val.pixels.flatten(1).double(), data.real.pixels.flatten(1).double()
    to_train = (val[:, None] - train[None]).pow(2).mean(-1).sqrt().min(1).values.numpy()
    pairwise = (val[:, None] - val[None]).pow(2).mean(-1).sqrt()
    same_class = torch.tensor(targets[:, None] == targets[None]) & ~torch.eye(len(val), dtype=torch.bool)
    to_sibling = pairwise.masked_fill(~same_class, np.inf).min(1).values.numpy()
    assert thresholds.confidence.value == pytest.approx(np.quantile(probabilities[correct, targets[correct]], 0.05))
    assert thresholds.confidence.n_values == correct.sum() < len(val)
    assert thresholds.near_copy.value == pytest.approx(np.quantile(to_train, 0.01))
    assert thresholds.near_duplicate.value == pytest.approx(np.quantile(to_sibling, 0.2))
    assert (thresholds.near_copy.n_values, thresholds.near_duplicate.n_values) == (200, 200)
    assert thresholds.near_copy.quantile == 0.01 and "validation" in thresholds.near_copy.measure
    # a different validation split moves every threshold; the test split is no input at all
    other_val = digits_data(n_train=300, n_val=100, n_test=100).test  # digits 500..599 as validation
    moved = calibrate_thresholds(scorer, data.real.pixels, other_val.pixels, other_val.labels, data.classes, params)
    assert all(getattr(moved, k).value != getattr(thresholds, k).value for k in ("confidence", "near_copy",
                                                                                  "near_duplicate"))
    fewer_test = digits_data(n_train=300, n_val=200, n_test=10)
    synthetic = data.real.pixels[:20].flip(-1), data.real.labels[:20]
    assert run_filter(scorer, data, *synthetic) == run_filter(scorer, fewer_test, *synthetic)


def test_reasons_are_checked_in_order_and_dropped_images_are_no_duplicate_reference(data):
    a, b = data.val.pixels[0], data.val.pixels[1]
    vectors = embed(torch.stack([a, a, a, b, a, a]), "pixels")
    confidence = np.array([0.1, 0.9, 0.9, 0.1, 0.9, 0.1])
    to_real = np.array([0.0, 0.0, 0.5, 0.0, 0.5, 0.0])
    thresholds = Thresholds(*(Threshold(value, 0.05, 10, 0, "test") for value in (0.5, 0.1, 0.1)))
    records = decide(["x"] * 6, confidence, to_real, np.arange(6), vectors, thresholds)
    assert [r.reason for r in records] == ["low_confidence", "near_copy", "", "low_confidence", "near_duplicate",
                                           "low_confidence"]
    # 0 and 1 were dropped before 2, so 2 has no kept sibling and stays; 4 and 5 are copies of 2
    assert [r.nearest_synthetic_index for r in records] == [None, None, None, 2, 2, 2]
    assert records[4].nearest_synthetic_distance == 0.0 and records[3].nearest_synthetic_distance > 0.1
    assert [r.kept for r in records] == [False, False, True, False, False, False]


def mixed_synthetic(scorer, data: TrainingData) -> tuple[torch.Tensor, list[str]]:
    """Two training copies (one, two), a duplicated unseen two, and an unseen three labelled seven."""
    (three,) = confident_val_images(scorer, data, "three", 1)
    (two,) = confident_val_images(scorer, data, "two", 1)
    pixels = torch.stack([data.real.pixels[1], data.real.pixels[2], data.val.pixels[two], data.val.pixels[two],
                          data.val.pixels[three]])
    return pixels, ["one", "two", "two", "two", "seven"]


def test_disabled_filter_keeps_everything_and_still_scores(scorer, data):
    pixels, labels = mixed_synthetic(scorer, data)
    on = run_filter(scorer, data, pixels, labels)
    off = run_filter(scorer, data, pixels, labels, enabled=False)
    assert [r.reason for r in on.records] == ["near_copy", "near_copy", "", "near_duplicate", "low_confidence"]
    assert all(r.kept for r in off.records)
    assert [r.reason for r in off.records] == [r.reason for r in on.records]  # what switching it on would drop
    assert count_decisions(off.records)["_all"] == {"kept": 5, "low_confidence": 1, "near_copy": 2,
                                                    "near_duplicate": 1, "total": 5}
    assert off.thresholds == on.thresholds
    same = ("confidence", "nearest_real_distance", "nearest_real_index")
    assert [[getattr(r, k) for k in same] for r in off.records] == [[getattr(r, k) for k in same] for r in on.records]
    # with everything kept, the copied training two is a duplicate reference for the unseen two
    assert [r.nearest_synthetic_index for r in off.records] == [None, None, 1, 2, None]
    assert [r.nearest_synthetic_index for r in on.records] == [None, None, None, 2, None]


def test_count_decisions_per_class_and_reason(scorer, data):
    counts = count_decisions(run_filter(scorer, data, *mixed_synthetic(scorer, data)).records)
    zero = {"kept": 0, "low_confidence": 0, "near_copy": 0, "near_duplicate": 0}
    assert counts == {
        "one": {**zero, "near_copy": 1, "total": 1},
        "two": {**zero, "kept": 1, "near_copy": 1, "near_duplicate": 1, "total": 3},
        "seven": {**zero, "low_confidence": 1, "total": 1},
        "_all": {"kept": 1, "low_confidence": 1, "near_copy": 2, "near_duplicate": 1, "total": 5},
    }


def test_decided_rows_name_the_nearest_images_by_id_and_path(scorer, data):
    """Two identical validation twos and a training one: the rows keep their manifest fields and name the nearest
    real image by its id and the kept sibling by its path."""
    first, other = confident_val_images(scorer, data, "two", 2)
    pixels = torch.stack([data.val.pixels[first], data.val.pixels[other], data.val.pixels[first], data.real.pixels[5]])
    labels = ["two", "two", "two", data.real.labels[5]]
    rows = [{"path": f"shard-two-0/{i:04d}.png", "label": label, "seed": 7 + i} for i, label in enumerate(labels)]
    result = run_filter(scorer, data, pixels, labels)
    decided = decided_rows(rows, result.records, data.real.ids)
    assert [{k: row[k] for k in ("path", "label", "seed")} for row in decided] == rows
    assert [(row["kept"], row["reason"]) for row in decided] == [(True, ""), (True, ""), (False, "near_duplicate"),
                                                                 (False, "near_copy")]
    assert [row["nearest_synthetic_path"] for row in decided] == [None, rows[0]["path"], rows[0]["path"], None]
    assert decided[3]["nearest_real_id"] == data.real.ids[5] and decided[3]["nearest_real_distance"] == 0.0
    assert all(row["nearest_real_id"] == data.real.ids[record.nearest_real_index]
               and row["confidence"] == record.confidence for row, record in zip(decided, result.records))
    with pytest.raises(ValueError, match="one record per manifest row"):
        decided_rows(rows[:2], result.records, data.real.ids)


def test_thresholds_json_writes_an_uncalibrated_threshold_as_null(scorer, data):
    calibrated = thresholds_json(calibrate_thresholds(scorer, data.real.pixels, data.val.pixels, data.val.labels,
                                                      data.classes, FilterParams()))
    assert list(calibrated) == ["confidence", "near_copy", "near_duplicate"]
    assert all(isinstance(t["value"], float) and t["n_values"] > 0 for t in calibrated.values())
    assert calibrated["near_copy"]["quantile"] == FilterParams().near_copy_quantile
    one_each = [int(data.val.of_class(label)[0]) for label in data.classes]
    off = filter_synthetic(scorer, data.real.pixels[:3], data.real.labels[:3], data.real.pixels,
                           data.val.pixels[one_each], [data.val.labels[i] for i in one_each], data.classes,
                           FilterParams(enabled=False))
    uncalibrated = thresholds_json(off.thresholds)
    assert [t["value"] for t in uncalibrated.values()] == [None, None, None]
    assert uncalibrated["near_duplicate"]["measure"].startswith("not calibrated")


def test_the_real_only_classifier_is_the_first_models_plain_real_cell():
    train = TrainParams(models=("wrn28_2", "small_cnn"), baselines=("autoaugment", "default"),
                        strategies=("combined", "rsp"), seeds=(3, 4),
                        model_settings={"wrn28_2": ModelSettings(epochs=7), "small_cnn": ModelSettings()})
    cell, grid = real_only_classifier(train)
    assert cell == Cell("wrn28_2", "default", "real", 0) and not cell.uses_synthetic
    assert (grid.strategies, grid.baselines) == (("real",), ("default",))
    assert dataclasses.replace(grid, strategies=train.strategies, baselines=train.baselines) == train  # nothing else


def test_distances_in_the_classifier_feature_space(scorer, classifier, data):
    feature_fn = classifier[0]
    pixels, labels = data.real.pixels[[3, 4]], data.real.labels[3:5]
    result = run_filter(scorer, data, pixels, labels, space="features", feature_fn=feature_fn)
    assert [(r.reason, r.nearest_real_distance, r.nearest_real_index) for r in result.records] == \
        [("near_copy", 0.0, 3), ("near_copy", 0.0, 4)]
    assert result.thresholds.near_copy.measure.startswith("features")
    pixel_space = calibrate_thresholds(scorer, data.real.pixels, data.val.pixels, data.val.labels, data.classes,
                                       FilterParams())
    assert result.thresholds.near_copy.value != pixel_space.near_copy.value
    with pytest.raises(ValueError, match="feature_fn"):
        run_filter(scorer, data, pixels, labels, space="features")


def test_a_validation_split_without_pairs_cannot_calibrate(scorer, data):
    one_each = [int(data.val.of_class(label)[0]) for label in data.classes]
    with pytest.raises(FilterError, match=r"filter\.duplicate_quantile.*prepare\.val_per_class"):
        calibrate_thresholds(scorer, data.real.pixels, data.val.pixels[one_each],
                             [data.val.labels[i] for i in one_each], data.classes, FilterParams())


def test_switched_off_a_split_too_small_to_calibrate_still_scores(scorer, data):
    one_each = [int(data.val.of_class(label)[0]) for label in data.classes]
    result = filter_synthetic(scorer, data.real.pixels[:20], data.real.labels[:20], data.real.pixels,
                              data.val.pixels[one_each], [data.val.labels[i] for i in one_each], data.classes,
                              FilterParams(enabled=False))
    assert all(r.kept and r.reason == "" for r in result.records)
    assert all(0.0 <= r.confidence <= 1.0 for r in result.records)
    assert math.isnan(result.thresholds.near_duplicate.value)
    assert result.thresholds.near_duplicate.measure.startswith("not calibrated: filter.duplicate_quantile")


def write_tiny_clip(folder: Path) -> Path:
    """A random CLIPModel (32-d text and 32 px vision towers), tokenizer and image processor, as
    save_pretrained writes them."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    vocab_size = write_tokenizer(folder)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": MAX_TOKENS, "bos_token_id": vocab_size - 2,
                     "eos_token_id": vocab_size - 1, "pad_token_id": vocab_size - 1},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 4},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_clip_scorer_gives_class_probabilities_and_its_own_calibrated_threshold(tiny_clip, scorer, classifier, data):
    from mvcaug.judging.clip_scores import ClipScorer

    params = FilterParams(clip_model=str(tiny_clip))
    clip = label_scorer(params, classifier[1], device="cpu")
    assert isinstance(clip, ClipScorer) and clip.name == f"clip:{tiny_clip}"
    probabilities = clip(data.val.pixels[:30], data.classes)
    assert probabilities.shape == (30, 10) and np.allclose(probabilities.sum(1), 1.0) and (probabilities > 0).all()
    assert not np.allclose(probabilities, probabilities[:1])  # it looks at the images
    # the confidence threshold comes from CLIP's probabilities on validation, not the classifier's
    thresholds = calibrate_thresholds(clip, data.real.pixels, data.val.pixels, data.val.labels, data.classes, params)
    everything = clip(data.val.pixels, data.classes)
    targets = np.array([data.classes.index(label) for label in data.val.labels])
    correct = everything.argmax(1) == targets
    assert thresholds.confidence.value == pytest.approx(np.quantile(everything[correct, targets[correct]], 0.05))
    assert thresholds.confidence.n_values == correct.sum() and thresholds.confidence.measure.startswith("clip:")
    pixels, labels = data.val.pixels[:5], data.val.labels[:5]
    records = run_filter(clip, data, pixels, labels, clip_model=str(tiny_clip)).records
    assert [r.confidence for r in records] == pytest.approx(list(everything[np.arange(5), targets[:5]]))
    assert label_scorer(FilterParams(), classifier[1]).name == "classifier"


def test_a_missing_or_broken_clip_folder_is_a_one_line_user_error(tmp_path, classifier):
    from mvcaug.io.scorer_models import ClipModelError

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    for folder in (tmp_path / "nowhere", broken):
        with pytest.raises(ClipModelError) as info:
            label_scorer(FilterParams(clip_model=str(folder)), classifier[1])
        message = str(info.value)
        assert isinstance(info.value, UserError) and "\n" not in message
        assert "filter.clip_model" in message and str(folder) in message and "hf download" in message


def test_filter_params_defaults_and_checks():
    assert params_from_dict({}).filter == FilterParams()
    assert params_from_dict({"filter": {"space": "features", "near_copy_quantile": 0}}).filter.space == "features"
    for raw, named in (({"near_copy_quantile": 1.0}, "filter.near_copy_quantile"),
                       ({"confidence_quantile": -0.1}, "filter.confidence_quantile"),
                       ({"duplicate_quantile": 2}, "filter.duplicate_quantile"),
                       ({"space": "latents"}, "filter.space")):
        with pytest.raises(ParamsError, match=named.replace(".", r"\.")):
            params_from_dict({"filter": raw})
