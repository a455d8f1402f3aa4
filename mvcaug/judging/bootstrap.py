"""A paired two-level bootstrap of accuracy gains: over classifier seeds and over test images.

The paired t-interval over seeds (mvcaug.judging.stats) treats the test split as fixed, so it says how much the
gain would move with other seeds on *these* test images. The test images are themselves one sample of
the task's distribution; a user asks about the distribution. Resampling both levels at once (seeds with
replacement, then test images, or whole clusters of them such as one writer's digits, with replacement)
gives an interval that covers both sources. Every strategy shares the same draws (same seeds, same
images), so the differences stay paired and ratios such as the share of the real-image gap closed get
intervals from the same replicates. Resampling both levels of a crossed design (every seed sees every image)
counts the seed-by-image part of the variance at both levels: the interval errs on the wide side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Resamples", "draw_resamples", "resampled_gains", "percentile_interval"]


@dataclass(frozen=True)
class Resamples:
    """How often each seed and each test image appears in each bootstrap replicate."""

    seed_counts: np.ndarray
    """(draws, seeds): multiplicity of seed s in replicate b (each row sums to the number of seeds)."""
    image_counts: np.ndarray
    """(draws, images): multiplicity of test image i in replicate b (a drawn cluster brings all its images)."""
    generator_counts: np.ndarray | None = None
    """(draws, generators): multiplicity of generator r in replicate b, the outermost level, for a synthetic set
    drawn by several generators (generate.replicates); None with one generator."""

    @property
    def draws(self) -> int:
        return int(self.seed_counts.shape[0])


def draw_resamples(seeds: int, images: int, clusters: np.ndarray | None = None, draws: int = 2000,
                   seed: int = 0, generators: int = 1) -> Resamples:
    """Multiplicities of `draws` two-level bootstrap replicates.

    Args:
        seeds: classifier seeds (the outer level).
        images: test images (the inner level).
        clusters: a cluster id per test image (e.g. its writer); clusters are drawn whole, since images of
            one cluster are not independent. None treats every image as its own cluster.
        draws: replicates.
        seed: the resampling stream's seed, so a report is reproducible.
        generators: finetune-generate draws (the outermost level, drawn after the others from the same stream,
            so seeds and images are drawn alike whatever their number).

    Raises:
        ValueError: no seed or image, or clusters of the wrong length.
    """
    if seeds < 1 or images < 1 or draws < 1 or generators < 1:
        raise ValueError(f"a bootstrap needs generators, seeds, images and draws >= 1, got {generators}, {seeds}, "
                         f"{images}, {draws}")
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
    generator_counts = (rng.multinomial(generators, np.full(generators, 1.0 / generators), size=draws).astype(np.float64)
                        if generators > 1 else None)
    return Resamples(seed_counts.astype(np.float64), image_counts.astype(np.float64), generator_counts)


def resampled_gains(treatment: np.ndarray, control: np.ndarray, resamples: Resamples) -> np.ndarray:
    """The mean gain (treatment - control accuracy) in every replicate.

    Args:
        treatment, control: (seeds, images) correctness (1 right, 0 wrong) of the paired cells: row s of
            both came from the same seed, column i is the same test image. A treatment of shape
            (generators, seeds, images) is a synthetic set drawn by several generators, each paired with the
            same control: the resamples then need generator_counts.

    Returns:
        (draws,) gains: the weighted mean over drawn generators, seeds and images of the per-image differences.
    """
    treatment, control = np.asarray(treatment, np.float64), np.asarray(control, np.float64)
    if treatment.ndim == 3:
        return _nested_gains(treatment, control, resamples)
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
    """The central `confidence` interval of replicate values; NaN (no interval) when they do not vary at all
    (no spread at either level: a zero-width interval would claim certainty) or when more than the tail share
    of them is undefined (NaN, e.g. a ratio over a reference gain below its floor: the interval of the rest
    would quietly be conditional on the ratio existing)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    tail = (1 - confidence) / 2
    if finite.size == 0 or np.ptp(finite) == 0 or finite.size < (1 - tail) * values.size:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [tail, 1 - tail])
    return float(low), float(high)


def _nested_gains(treatment: np.ndarray, control: np.ndarray, resamples: Resamples) -> np.ndarray:
    """resampled_gains for a (generators, seeds, images) treatment: generators drawn first, then seeds, then images."""
    counts = resamples.generator_counts
    if counts is None or treatment.shape != (counts.shape[1], *control.shape):
        raise ValueError(f"a treatment of shape {treatment.shape} needs resamples drawn with its generators and a "
                         f"control of shape {treatment.shape[1:]}, got {control.shape}")
    if control.shape != (resamples.seed_counts.shape[1], resamples.image_counts.shape[1]):
        raise ValueError(f"arrays of shape {control.shape} do not match the resamples' (seeds, images)")
    differences = treatment - control[None]
    # sum_r sum_s sum_i u_r w_s v_i d[r, s, i] / (sum_r u_r * sum_s w_s * sum_i v_i)
    weighted = np.einsum("br,bs,rsi,bi->b", counts, resamples.seed_counts, differences, resamples.image_counts)
    return weighted / (counts.sum(1) * resamples.seed_counts.sum(1) * resamples.image_counts.sum(1))
