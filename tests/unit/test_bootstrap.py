"""The two-level paired bootstrap against a brute-force enumeration of every resample."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mvcaug.judging.bootstrap import draw_resamples, percentile_interval, resampled_gains


def interval(treatment, control, clusters=None, draws=2000):
    """The 95% two-level bootstrap interval of the paired gain."""
    resamples = draw_resamples(treatment.shape[0], treatment.shape[1], clusters, draws, seed=0)
    return percentile_interval(resampled_gains(treatment, control, resamples))

# 2 seeds x 3 test images; rows are seeds, columns images, 1 = classified right
TREATMENT = np.array([[1, 1, 0], [1, 0, 1]])
CONTROL = np.array([[0, 1, 0], [1, 0, 0]])


def enumerated_gains(treatment: np.ndarray, control: np.ndarray, clusters: list[int] | None = None) -> np.ndarray:
    """The statistic over every ordered draw of seeds and of clusters, each equally likely."""
    seeds, images = treatment.shape
    groups = sorted(set(clusters)) if clusters is not None else list(range(images))
    members = {g: [i for i in range(images) if (clusters[i] if clusters is not None else i) == g] for g in groups}
    gains = []
    for drawn_seeds in itertools.product(range(seeds), repeat=seeds):
        for drawn_groups in itertools.product(groups, repeat=len(groups)):
            columns = [i for g in drawn_groups for i in members[g]]
            rows = list(drawn_seeds)
            gains.append((treatment[np.ix_(rows, columns)] - control[np.ix_(rows, columns)]).mean())
    return np.array(gains)


def test_replicates_follow_the_enumerated_distribution():
    exact = enumerated_gains(TREATMENT, CONTROL)
    replicates = resampled_gains(TREATMENT, CONTROL, draw_resamples(2, 3, draws=200_000, seed=1))
    assert replicates.mean() == pytest.approx(exact.mean(), abs=2e-3)
    assert replicates.std() == pytest.approx(exact.std(), abs=2e-3)
    for value in np.unique(exact):  # every attainable value is drawn as often as it is enumerated
        assert np.isclose(replicates, value).mean() == pytest.approx(np.isclose(exact, value).mean(), abs=5e-3)


def test_clusters_are_drawn_whole_as_the_enumeration_does():
    treatment = np.array([[1, 1, 0, 0], [1, 1, 1, 0]])
    control = np.array([[0, 0, 0, 0], [1, 0, 0, 0]])
    clusters = [7, 7, 3, 3]  # images 0-1 one writer, 2-3 another
    exact = enumerated_gains(treatment, control, clusters)
    replicates = resampled_gains(treatment, control, draw_resamples(2, 4, np.array(clusters), 200_000, seed=2))
    for value in np.unique(exact):
        assert np.isclose(replicates, value).mean() == pytest.approx(np.isclose(exact, value).mean(), abs=5e-3)


def test_correlated_clusters_widen_the_interval():
    rng = np.random.default_rng(0)
    writers = np.repeat(np.arange(10), 40)  # 400 images, 10 writers; the treatment helps some writers only
    helped = np.isin(writers, rng.choice(10, 5, replace=False))
    control = (rng.random((5, 400)) < 0.8).astype(float)
    treatment = np.where(helped, 1.0, control)
    per_image = interval(treatment, control, draws=4000)
    per_writer = interval(treatment, control, clusters=writers, draws=4000)
    assert per_writer[1] - per_writer[0] > 1.5 * (per_image[1] - per_image[0])


def test_a_gain_without_spread_gets_no_zero_width_interval():
    same = np.array([[1.0, 1.0, 1.0]])
    assert all(np.isnan(interval(same, same)))  # identical predictions: no spread at either level
    some = np.array([[1.0, 0.0, 1.0]])  # one seed still varies over test images
    low, high = interval(some, np.zeros_like(some))
    assert low < high


def test_the_interval_is_the_central_share_of_the_replicates():
    assert percentile_interval(np.arange(101, dtype=float), 0.9) == pytest.approx((5.0, 95.0))
    values = np.arange(100, dtype=float)
    values[:2] = np.nan  # 2% undefined: within the 2.5% tail, the interval stands
    assert percentile_interval(values) == pytest.approx(tuple(np.quantile(values[2:], [0.025, 0.975])))
    values[:3] = np.nan  # 3%: more than a tail's share is undefined, so the rest's interval would be conditional
    assert all(np.isnan(percentile_interval(values)))
    with pytest.raises(ValueError, match="confidence"):
        percentile_interval(np.ones(3), 1.0)


def test_unpaired_arrays_are_refused():
    with pytest.raises(ValueError, match="paired"):
        resampled_gains(np.ones((2, 3)), np.ones((3, 2)), draw_resamples(2, 3))
    with pytest.raises(ValueError, match="one id per test image"):
        draw_resamples(2, 3, np.array([0, 1]))


def enumerated_nested_gains(treatment: np.ndarray, control: np.ndarray) -> np.ndarray:
    """Every ordered draw of generators, then seeds, then images, each equally likely: (generators, seeds,
    images) treatment, each generator paired with the same (seeds, images) control."""
    generators, seeds, images = treatment.shape
    gains = []
    for drawn_generators in itertools.product(range(generators), repeat=generators):
        for drawn_seeds in itertools.product(range(seeds), repeat=seeds):
            for drawn_images in itertools.product(range(images), repeat=images):
                rows, columns = list(drawn_seeds), list(drawn_images)
                gains.append(np.mean([(treatment[g][np.ix_(rows, columns)] - control[np.ix_(rows, columns)]).mean()
                                      for g in drawn_generators]))
    return np.array(gains)


def test_generators_are_the_outer_level_of_the_enumerated_distribution():
    treatment = np.array([TREATMENT, [[0, 1, 0], [1, 1, 1]]])  # 2 generators x 2 seeds x 3 images
    exact = enumerated_nested_gains(treatment, CONTROL)
    resamples = draw_resamples(2, 3, draws=200_000, seed=3, generators=2)
    replicates = resampled_gains(treatment, CONTROL, resamples)
    assert replicates.mean() == pytest.approx(exact.mean(), abs=2e-3)
    assert replicates.std() == pytest.approx(exact.std(), abs=2e-3)
    for value in np.unique(np.round(exact, 9)):
        assert np.isclose(replicates, value).mean() == pytest.approx(np.isclose(exact, value).mean(), abs=5e-3)
    # the generator level widens the interval of the same mean gain: one generator's draws know nothing of it
    alone = draw_resamples(2, 3, draws=200_000, seed=3)
    assert np.array_equal(alone.seed_counts, resamples.seed_counts)  # seeds and images drawn alike, R aside
    pooled = resampled_gains(treatment.mean(0), CONTROL, alone)
    assert replicates.std() > pooled.std()


def test_a_nested_treatment_needs_generator_draws():
    with pytest.raises(ValueError, match="needs resamples drawn with its generators"):
        resampled_gains(np.zeros((2, 2, 3)), CONTROL, draw_resamples(2, 3, draws=10))
