"""The quality stage measures FID/KID against held-out real images, never against the test split, and its
calibration constants (and the offline captioner's) are computed without test images."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from mvcaug.io.digests import PROJECT_ROOT
from mvcaug.method.image_attributes import STROKE_CUTS, measure
from mvcaug.data.images import ImageSet, to_image
from mvcaug.io.images import load_split
from mvcaug.core.params import PrepareParams
from mvcaug.io.params_file import load_params
from mvcaug.judging.quality import WITHIN_RMSE
from tasks.prepare import prepare_dataset
from tasks.quality import fid_comparison_set


def test_fid_compares_with_the_reference_split_and_never_the_test_split(tmp_path: Path):
    with_reference = prepare_dataset(PrepareParams(train_per_class=3, val_per_class=2, test_per_class=2,
                                                   reference_per_class=2), tmp_path / "with")
    split, images = fid_comparison_set(str(tmp_path / "with"), channels=1)
    rows = with_reference.to_pylist()
    assert split == "reference" and images.ids == [r["id"] for r in rows if r["split"] == "reference"]
    prepare_dataset(PrepareParams(train_per_class=3, val_per_class=2, test_per_class=2), tmp_path / "without")
    split, images = fid_comparison_set(str(tmp_path / "without"), channels=1)
    assert split == "val" and len(images.ids) == 2 * 10  # without a reference split: validation, not test


@pytest.fixture(scope="module")
def default_non_test(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    """The default params' digits that are not test images: the only ones a calibration constant may see."""
    folder = tmp_path_factory.mktemp("default")
    prepare_dataset(load_params(PROJECT_ROOT / "params.yaml").prepare, folder)
    splits = [load_split(folder, split, channels=1) for split in ("train", "val", "reference")]
    return functools.reduce(ImageSet.concat, splits)


def test_the_within_rmse_threshold_is_calibrated_without_test_images(default_non_test: ImageSet):
    pixels = default_non_test.pixels.flatten(1).double()
    distance = torch.cdist(pixels, pixels) / pixels.shape[1] ** 0.5
    distance.fill_diagonal_(float("inf"))
    nearest = distance.min(1).values.numpy()
    nearest = nearest[nearest > 0]  # distinct digits
    assert len(default_non_test.ids) == 450
    assert np.quantile(nearest, 0.01) == pytest.approx(0.144, abs=5e-4)
    assert np.median(nearest) == pytest.approx(0.241, abs=5e-4)
    assert WITHIN_RMSE < np.quantile(nearest, 0.01)  # fewer than 1% of unseen digits are that close


def test_the_stroke_words_cut_at_the_tertiles_of_non_test_digits(default_non_test: ImageSet):
    images = [to_image(pixels, 16) for pixels in default_non_test.pixels]
    attributes = [measure(image) for image in images]
    for name, cuts in STROKE_CUTS.items():
        values = np.array([getattr(a, name) for a in attributes])
        assert cuts == tuple(round(float(q), 4) for q in np.quantile(values, [1 / 3, 2 / 3])), name


def test_kid_subsets_are_smaller_than_the_sets_so_their_spread_means_something():
    from mvcaug.judging.quality import kernel_inception_distance
    from tasks.quality import kid_subset_size

    rng = np.random.default_rng(0)
    real, synthetic = rng.normal(size=(200, 16)), rng.normal(0.3, 1.0, size=(200, 16))  # the default's 200 and 200
    _, whole_sets = kernel_inception_distance(real, synthetic, subsets=10, subset_size=200)
    assert whole_sets < 1e-12  # every subset is the whole of both sets (shuffled): a spread of 0 says nothing
    _, spread = kernel_inception_distance(real, synthetic, subsets=10, subset_size=kid_subset_size(200, 200))
    assert spread > 1e-6 and kid_subset_size(200, 1347) == 100 and kid_subset_size(3, 3) == 2
