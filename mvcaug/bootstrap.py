"""A paired two-level bootstrap of accuracy gains: over classifier seeds and over test images.

The paired t-interval over seeds (mvcaug.stats) treats the test split as fixed, so it says how much the
gain would move with other seeds on *these* test images. The test images are themselves one sample of
the task's distribution; a user asks about the distribution. Resampling both levels at once (seeds with
replacement, then test images, or whole clusters of them such as one writer's digits, with replacement)
gives an interval that covers both sources. Every strategy shares the same draws (same seeds, same
images), so the differences stay paired and ratios such as the share of the real-image gap closed get
intervals from the same replicates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Resamples", "draw_resamples", "resampled_gains", "percentile_interval", "BootstrapGain",
           "bootstrap_gain"]


@dataclass(frozen=True)
class Resamples:
    """How often each seed and each test image appears in each bootstrap replicate."""

    seed_counts: np.ndarray
    """(draws, seeds): multiplicity of seed s in replicate b (each row sums to the number of seeds)."""
    image_counts: np.ndarray
    """(draws, images): multiplicity of test image i in replicate b (a drawn cluster brings all its images)."""

    @property
    def draws(self) -> int:
        return int(self.seed_counts.shape[0])


def draw_resamples(seeds: int, images: int, clusters: np.ndarray | None = None, draws: int = 2000,
                   seed: int = 0) -> Resamples:
    """Multiplicities of `draws` two-level bootstrap replicates.

    Args:
        seeds: classifier seeds (the outer level).
        images: test images (the inner level).
        clusters: a cluster id per test image (e.g. its writer); clusters are drawn whole, since images of
            one cluster are not independent. None treats every image as its own cluster.
        draws: replicates.
        seed: the resampling stream's seed, so a report is reproducible.

    Raises:
        ValueError: no seed or image, or clusters of the wrong length.
    """
    if seeds < 1 or images < 1 or draws < 1:
        raise ValueError(f"a bootstrap needs seeds, images and draws >= 1, got {seeds}, {images}, {draws}")
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=draws)
    if clusters is None:
        image_counts = rng.multinomial(images, np.full(images, 1.0 / images), size=draws)
    else:
        clusters = np.asarray(clusters)
        if clusters.shape != (images,):
            raise ValueError(f"clusters must give one id per test image ({images}), got shape {clusters.shape}")
        _, member_of = np.unique(clusters, return_inverse=True)
        groups = int(member_of.max()) + 1
        cluster_counts = rng.multinomial(groups, np.full(groups, 1.0 / groups), size=draws)
        image_counts = cluster_counts[:, member_of]
    return Resamples(seed_counts.astype(np.float64), image_counts.astype(np.float64))


def resampled_gains(treatment: np.ndarray, control: np.ndarray, resamples: Resamples) -> np.ndarray:
    """The mean gain (treatment - control accuracy) in every replicate.

    Args:
        treatment, control: (seeds, images) correctness (1 right, 0 wrong) of the paired cells: row s of
            both came from the same seed, column i is the same test image.

    Returns:
        (draws,) gains: the weighted mean over drawn seeds and drawn images of the per-image differences.
    """
    treatment, control = np.asarray(treatment, np.float64), np.asarray(control, np.float64)
    if treatment.shape != control.shape or treatment.ndim != 2:
        raise ValueError(f"treatment and control must be paired (seeds, images) arrays, got {treatment.shape} "
                         f"and {control.shape}")
    if treatment.shape != (resamples.seed_counts.shape[1], resamples.image_counts.shape[1]):
        raise ValueError(f"arrays of shape {treatment.shape} do not match the resamples' (seeds, images)")
    differences = treatment - control
    # sum_s sum_i w_s v_i d[s, i] / (sum_s w_s * sum_i v_i), for every replicate at once
    weighted = np.einsum("bs,si,bi->b", resamples.seed_counts, differences, resamples.image_counts)
    return weighted / (resamples.seed_counts.sum(1) * resamples.image_counts.sum(1))


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central `confidence` interval of replicate values (NaNs, e.g. undefined ratios, excluded)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2
    low, high = np.quantile(finite, [tail, 1 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class BootstrapGain:
    """A paired gain with its two-level bootstrap interval.

    When every replicate gives the same gain (no spread at either level, e.g. a single seed whose
    predictions agree on every image), there is no interval: ci_low and ci_high are NaN rather than a
    zero-width interval that would claim certainty."""

    mean: float
    ci_low: float
    ci_high: float
    draws: int
    confidence: float

    @property
    def has_interval(self) -> bool:
        return bool(np.isfinite(self.ci_low) and np.isfinite(self.ci_high))


def bootstrap_gain(treatment: np.ndarray, control: np.ndarray, clusters: np.ndarray | None = None,
                   draws: int = 2000, confidence: float = 0.95, seed: int = 0) -> BootstrapGain:
    """The gain of `treatment` over `control` with a paired bootstrap interval over seeds and test images."""
    treatment, control = np.asarray(treatment, np.float64), np.asarray(control, np.float64)
    resamples = draw_resamples(treatment.shape[0], treatment.shape[1], clusters, draws, seed)
    gains = resampled_gains(treatment, control, resamples)
    mean = float((treatment - control).mean())
    if np.ptp(gains) == 0:
        return BootstrapGain(mean, float("nan"), float("nan"), draws, confidence)
    low, high = percentile_interval(gains, confidence)
    return BootstrapGain(mean, low, high, draws, confidence)
