"""Synthetic-data quality measures on real small data: scikit-learn's digits and a tiny SmallCNN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mvcaug.models.small_cnn import SmallCNN
from mvcaug.data.prepare import DIGIT_NAMES
from mvcaug.judging.quality import (
    WITHIN_RMSE,
    classifier_feature_fns,
    diversity,
    extract,
    frechet_distance,
    kernel_inception_distance,
    label_fidelity,
    memorisation,
    quality_report,
)

CLASSES = list(DIGIT_NAMES)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, list[str]]:
    """The first 600 digits upsampled to 16 px, in [-1, 1], with their class names."""
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = torch.tensor(data.images[:600] / 8.0 - 1.0, dtype=torch.float32)[:, None]
    pixels = F.interpolate(pixels, size=(16, 16), mode="bicubic", antialias=True).clamp(-1, 1)
    return pixels, [DIGIT_NAMES[t] for t in data.target[:600]]


@pytest.fixture(scope="module")
def model(digits) -> SmallCNN:
    """SmallCNN(width 8) trained for two epochs on the first 400 digits: a real-only classifier."""
    pixels, labels = digits
    targets = torch.tensor([CLASSES.index(label) for label in labels[:400]])
    torch.manual_seed(0)
    net = SmallCNN(1, 10, width=8)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(2):
        net.train()
        for batch in torch.randperm(400).split(32):
            loss = F.cross_entropy(net(pixels[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


@pytest.fixture(scope="module")
def features(digits, model) -> np.ndarray:
    """(600, 32) penultimate features of the digits."""
    feature_fn, _ = classifier_feature_fns(model)
    return extract(feature_fn, digits[0], batch_size=128)


def exact_gaussian_sample(rng: np.random.Generator, n: int, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """n points whose sample mean and (ddof=1) sample covariance are exactly `mean` and `cov`."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whitened: sample cov = I
    return z @ np.linalg.cholesky(cov).T + mean


def numpy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID without scipy.linalg.sqrtm: tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2))."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root1 @ s2 @ root1)
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(middle, 0, None)).sum())


def test_feature_fns_for_smallcnn_and_timm(digits, model):
    import timm

    x = digits[0][:5]
    feature_fn, predict_fn = classifier_feature_fns(model)
    assert feature_fn(x).shape == (5, 32)
    assert torch.allclose(predict_fn(x), model(x))
    net = timm.create_model("test_resnet", pretrained=False, num_classes=10, in_chans=1)
    feature_fn, predict_fn = classifier_feature_fns(net)
    assert not net.training and feature_fn(x).shape == (5, net.num_features)
    assert torch.allclose(predict_fn(x), net(x))
    with pytest.raises(TypeError, match="features"):
        classifier_feature_fns(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="flatten"):
        extract(lambda batch: batch, x)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift(features):
    assert abs(frechet_distance(features, features)) < 1e-6 * np.trace(np.cov(features, rowvar=False))
    direction = np.random.default_rng(0).standard_normal(features.shape[1])
    fids = [frechet_distance(features, features + s * direction) for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(fids, fids[1:]))
    # a pure shift leaves the covariances equal: FID is the squared shift
    assert fids[-1] == pytest.approx(4 * direction @ direction, rel=1e-6)
    # halves of the same digits are close; digits vs their inverted images are not
    assert frechet_distance(features[:300], features[300:]) < frechet_distance(features[:300], -features[300:])


def test_fid_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(1)
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    var1, var2 = np.array([1.0, 4.0]), np.array([9.0, 0.25])
    a = exact_gaussian_sample(rng, 200, mu1, np.diag(var1))
    b = exact_gaussian_sample(rng, 300, mu2, np.diag(var2))
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)  # 8 + 4 + 2.25
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-9)
    # full covariances: against an eigendecomposition instead of sqrtm
    c = exact_gaussian_sample(rng, 50, mu1, np.array([[2.0, 0.9], [0.9, 1.0]]))
    d = exact_gaussian_sample(rng, 50, mu2, np.array([[1.0, -0.4], [-0.4, 3.0]]))
    assert frechet_distance(c, d) == pytest.approx(numpy_fid(c, d), rel=1e-9)
    assert frechet_distance(torch.from_numpy(c), torch.from_numpy(d)) == pytest.approx(numpy_fid(c, d), rel=1e-9)


def test_fid_with_singular_covariances_is_finite(features):
    few = frechet_distance(features[:10], features[10:20])  # 10 images, 32 dimensions
    constant = np.zeros((20, 4))  # all-zero covariance
    assert math.isfinite(few) and few == pytest.approx(numpy_fid(features[:10], features[10:20]), rel=1e-6)
    assert frechet_distance(constant, constant) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="dimensions"):
        frechet_distance(features, features[:, :3])


def test_kid_is_near_zero_for_one_distribution_and_larger_when_shifted(features):
    scale = np.linalg.norm(features, axis=1).mean()
    same_mean, same_std = kernel_inception_distance(features[:300], features[300:], subsets=5, subset_size=100)
    shifted = [kernel_inception_distance(features[:300], features[300:] + s * scale / 6, subsets=5,
                                         subset_size=100)[0] for s in (0.5, 1.0)]
    assert abs(same_mean) < 0.1 * shifted[0] and same_std >= 0
    assert 0 < shifted[0] < shifted[1]
    # seeded, and with whole sets every subset is the full unbiased MMD^2
    assert kernel_inception_distance(features[:50], features[50:90], 3, 20, seed=4) == \
        kernel_inception_distance(features[:50], features[50:90], 3, 20, seed=4)
    x, y = features[:30], features[30:60]
    k = lambda a, b: (a @ b.T / x.shape[1] + 1) ** 3  # noqa: E731
    direct = (k(x, x).sum() - np.trace(k(x, x)) + k(y, y).sum() - np.trace(k(y, y))) / (30 * 29) - 2 * k(x, y).mean()
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=1000)
    assert mean == pytest.approx(direct, rel=1e-9) and std == pytest.approx(0.0, abs=1e-12)


def oracle(pixels: torch.Tensor, labels: list[str]):
    """A perfect predict_fn for these images: looks each one up and scores its true class."""
    def predict(batch: torch.Tensor) -> torch.Tensor:
        match = torch.cdist(batch.flatten(1), pixels.flatten(1)).argmin(1)
        return F.one_hot(torch.tensor([CLASSES.index(labels[i]) for i in match]), len(CLASSES)).float()
    return predict


def test_label_fidelity_of_an_oracle_and_of_permuted_labels(digits, model):
    pixels, labels = digits[0][:100], digits[1][:100]
    perfect = label_fidelity(oracle(pixels, labels), pixels, labels, CLASSES, batch_size=16)
    assert perfect == {**{c: 1.0 for c in CLASSES}, "_all": 1.0}
    shifted = [CLASSES[(CLASSES.index(label) + 1) % 10] for label in labels]  # every label wrong
    assert label_fidelity(oracle(pixels, labels), pixels, shifted, CLASSES)["_all"] == 0.0
    half = shifted[:50] + labels[50:]
    assert label_fidelity(oracle(pixels, labels), pixels, half, CLASSES)["_all"] == 0.5
    # the tiny real-only classifier, on digits it did not see: well above chance, but not perfect
    _, predict_fn = classifier_feature_fns(model)
    held_out = label_fidelity(predict_fn, digits[0][400:], digits[1][400:], CLASSES)
    assert 0.3 < held_out["_all"] <= 1.0 and set(held_out) == set(CLASSES) | {"_all"}
    only_two = label_fidelity(predict_fn, pixels[:2], labels[:2], CLASSES)
    assert set(only_two) == set(labels[:2]) | {"_all"}
    with pytest.raises(ValueError, match="eleven"):
        label_fidelity(predict_fn, pixels[:1], ["eleven"], CLASSES)


def test_diversity_is_zero_for_identical_images_and_larger_for_varied_ones(digits, features):
    same = np.repeat(features[:1], 5, axis=0)
    varied = features[:5]
    spread = diversity(np.concatenate([same, varied]), ["same"] * 5 + ["varied"] * 5)
    assert spread["same"] == 0.0 and spread["varied"] > 0
    assert spread["_all"] == pytest.approx((spread["same"] + spread["varied"]) / 2)
    triangle = diversity(torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [9.0, 9.0]]), ["a", "a", "a", "b"])
    assert triangle == {"a": pytest.approx(4.0), "_all": pytest.approx(4.0)}  # (3 + 4 + 5) / 3; b has no pair
    by_class = diversity(features, digits[1])
    assert set(by_class) == set(CLASSES) | {"_all"} and all(v > 0 for v in by_class.values())


def test_memorisation_finds_copies_and_not_noise(digits):
    real = digits[0][:200]
    copies = real[[7, 3, 150]]
    noise = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    found = memorisation(torch.cat([copies, noise]), real, batch_size=16)
    assert np.array_equal(found["distance"][:3], np.zeros(3))
    assert list(found["nearest"][:3]) == [7, 3, 150]
    assert (found["distance"][3:] > 3 * WITHIN_RMSE).all()
    assert found["within_threshold"] == 3 and found["threshold"] == WITHIN_RMSE and found["space"] == "pixels"
    assert found["min"] == 0.0 and found["median"] == float(np.median(found["distance"]))
    # batching changes nothing; a nearly-copied image still counts, unless the threshold is stricter
    assert np.array_equal(memorisation(torch.cat([copies, noise]), real, batch_size=1000)["nearest"], found["nearest"])
    nudged = (copies + 0.02).clamp(-1, 1)
    assert memorisation(nudged, real)["within_threshold"] == 3
    assert memorisation(nudged, real, threshold=0.01)["within_threshold"] == 0


def test_memorisation_in_a_feature_space(digits, model):
    feature_fn, _ = classifier_feature_fns(model)
    real = digits[0][:100]
    found = memorisation(real[[5, 9]], real, threshold=1e-6, feature_fn=feature_fn)
    assert found["space"] == "features" and found["within_threshold"] == 2 and list(found["nearest"]) == [5, 9]
    with pytest.raises(ValueError, match="threshold"):
        memorisation(real[:2], real, feature_fn=feature_fn)


def test_quality_report_is_flat_finite_and_documented(digits, model):
    pixels, labels = digits
    real, real_labels = pixels[:200], labels[:200]
    noise = torch.randn(100, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.1
    synthetic = (pixels[400:500] + noise).clamp(-1, 1)  # unseen digits, slightly noisy: plausible samples
    synthetic = torch.cat([synthetic, real[:3]])  # ... and three memorised ones
    synthetic_labels = labels[400:500] + real_labels[:3]
    feature_fn, predict_fn = classifier_feature_fns(model)
    report = quality_report(feature_fn, predict_fn, real, real_labels, synthetic, synthetic_labels, CLASSES,
                            kid_subsets=3, kid_subset_size=50, batch_size=64)
    expected = {"fid", "kid_mean", "kid_std", "memorisation.within_rmse", "memorisation.within_rmse_fraction",
                "memorisation.min_distance", "memorisation.median_distance", "memorisation.mean_distance"}
    expected |= {f"fidelity.{c}" for c in [*CLASSES, "_all"]}
    expected |= {f"diversity.{kind}.{c}" for kind in ("synthetic", "real") for c in [*CLASSES, "_all"]}
    expected |= {f"within_rmse_fraction.{c}" for c in CLASSES}
    assert set(report) == expected
    assert all(type(v) is float and math.isfinite(v) for v in report.values())
    assert report["memorisation.within_rmse"] == 3.0 and report["memorisation.min_distance"] == 0.0
    # the three copies, per class: each one's share of its class's synthetic images
    per_class = {c: report[f"within_rmse_fraction.{c}"] * synthetic_labels.count(c) for c in CLASSES}
    assert sum(per_class.values()) == 3.0 and all(per_class[c] >= 1 for c in set(real_labels[:3]))
    assert report["fid"] > 0 and 0.3 < report["fidelity._all"] <= 1.0


def test_quality_report_measures_fid_kid_in_a_second_feature_space_given_one(digits, model):
    pixels, labels = digits
    feature_fn, predict_fn = classifier_feature_fns(model)
    args = (feature_fn, predict_fn, pixels[:100], labels[:100], pixels[400:450], labels[400:450], CLASSES)
    plain = quality_report(*args, kid_subsets=2, kid_subset_size=40)
    # the classifier's own features as the "second" space: the Inception keys must repeat fid and kid
    both = quality_report(*args, kid_subsets=2, kid_subset_size=40, inception_fn=feature_fn)
    assert set(both) - set(plain) == {"fid_inception", "kid_inception_mean", "kid_inception_std"}
    assert (both["fid_inception"], both["kid_inception_mean"]) == pytest.approx((plain["fid"], plain["kid_mean"]))


def test_fid_and_kid_compare_with_the_comparison_set_and_memorisation_with_training(digits, model):
    pixels, labels = digits
    feature_fn, predict_fn = classifier_feature_fns(model)
    train, synthetic = pixels[:100], pixels[400:450]
    args = (feature_fn, predict_fn, train, labels[:100], synthetic, labels[400:450], CLASSES)
    against_train = quality_report(*args, kid_subsets=2, kid_subset_size=40)
    against_itself = quality_report(*args, kid_subsets=2, kid_subset_size=40, comparison_pixels=synthetic)
    assert against_itself["fid"] == pytest.approx(0.0, abs=1e-3) and against_train["fid"] > 0.01
    # memorisation and real diversity still look at the training images
    for key in ("memorisation.min_distance", "diversity.real._all"):
        assert against_itself[key] == against_train[key]
