"""Do synthetic images raise test accuracy? Paired gains over seeds, the real-image exchange rate, and the
one-sentence verdict the report prints.

Cells that differ only in their training strategy share the seed (same split order, same initial
weights), so a treatment and its control are compared seed by seed: a paired t-test on the per-seed
differences, which removes the seed-to-seed spread that both cells share. Accuracies are fractions in
[0, 1]; the sentences and table cells print percentage points (pp).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

SAME_DIFFERENCE_TOLERANCE = 1e-12
"""Per-seed differences whose spread is at most this are taken as identical (and a mean this close to 0 as
zero): an accuracy is a fraction of a test set, so any real difference is at least 1 / (test images), and
below this is floating-point rounding of differences such as 0.85 - 0.80 vs 0.75 - 0.70."""


@dataclass(frozen=True)
class PairedGain:
    """Mean paired difference (treatment - control) over the common seeds, with its t-interval and test.

    With a single pair there is no spread to estimate: ci_low, ci_high and p_value are NaN, and the
    verdict says that there are too few seeds."""

    mean: float
    """Mean over the common seeds of treatment - control (accuracy fractions)."""
    ci_low: float
    """Lower end of the two-sided t-interval of the mean difference at `confidence`."""
    ci_high: float
    """Upper end of that interval."""
    p_value: float
    """Two-sided paired t-test of "no difference"."""
    pairs: int
    """Number of seeds present in both cells."""
    confidence: float
    """Confidence level of the interval, e.g. 0.95."""

    @property
    def has_interval(self) -> bool:
        """Whether there were enough pairs (two or more) for an interval and a p-value."""
        return self.pairs >= 2


def paired_gain(treatment: Mapping[int, float], control: Mapping[int, float], confidence: float = 0.95) -> PairedGain:
    """The gain of `treatment` over `control`, paired by seed (the mappings' keys).

    Only seeds present in both count; a seed in one mapping only is ignored. When every pair differs by
    the same amount (zero variance), the interval collapses to that amount and p is 0.0 for a non-zero
    mean (the limit of the t-test as the spread goes to zero: every seed moved the same way by the same
    amount) and 1.0 for a zero mean (nothing changed on any seed); scipy gives the same limits, with
    warnings, or NaN for a zero mean.

    Raises:
        ValueError: no seed in common, a confidence outside (0, 1), or a non-finite accuracy.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    seeds = sorted(set(treatment) & set(control))
    if not seeds:
        raise ValueError(f"no seed in common: treatment has seeds {sorted(treatment)}, control has {sorted(control)}")
    treated = np.array([treatment[s] for s in seeds], dtype=np.float64)
    controlled = np.array([control[s] for s in seeds], dtype=np.float64)
    if not (np.isfinite(treated).all() and np.isfinite(controlled).all()):
        raise ValueError(f"non-finite accuracy among seeds {seeds}: treatment {treated}, control {controlled}")
    differences = treated - controlled
    mean = float(differences.mean())
    if len(seeds) == 1:
        return PairedGain(mean, math.nan, math.nan, math.nan, 1, confidence)
    if np.ptp(differences) <= SAME_DIFFERENCE_TOLERANCE:
        p_value = 1.0 if abs(mean) <= SAME_DIFFERENCE_TOLERANCE else 0.0
        return PairedGain(mean, mean, mean, p_value, len(seeds), confidence)
    test = stats.ttest_rel(treated, controlled)
    interval = test.confidence_interval(confidence_level=confidence)
    return PairedGain(mean, float(interval.low), float(interval.high), float(test.pvalue), len(seeds), confidence)


def exchange_rate(reference: Sequence[tuple[float, float]], gain: float) -> float | None:
    """How many extra real images per class give `gain`, read off the reference curve.

    Args:
        reference: (k real images added per class, mean test-accuracy gain over the real-only baseline)
            points with k > 0, in any order; the point (0, 0) is implied.
        gain: the accuracy gain to convert (e.g. the synthetic set's mean paired gain).

    Returns:
        0.0 when gain <= 0; otherwise k at the first crossing of `gain`, walking the curve in increasing k
        and interpolating linearly between neighbouring points. A curve that is not monotone (a noisy
        mean can dip) is read at its first crossing: the fewest real images seen to reach the gain.
        None when the curve never reaches the gain (the caller says "more than" the largest k).

    Raises:
        ValueError: a non-finite gain or point, a k <= 0, or the same k twice.
    """
    if not math.isfinite(gain):
        raise ValueError(f"gain must be finite, got {gain}")
    points = sorted((float(k), float(g)) for k, g in reference)
    ks = [k for k, _ in points]
    if not all(math.isfinite(k) and math.isfinite(g) for k, g in points):
        raise ValueError(f"reference points must be finite, got {points}")
    if any(k <= 0 for k in ks) or len(set(ks)) != len(ks):
        raise ValueError(f"reference k must be positive and distinct ((0, 0) is implied), got {ks}")
    if gain <= 0:
        return 0.0
    previous_k, previous_gain = 0.0, 0.0
    for k, reached in points:
        # previous_gain < gain here: the walk stops at the first point that reaches it.
        if reached >= gain:
            return previous_k + (gain - previous_gain) / (reached - previous_gain) * (k - previous_k)
        previous_k, previous_gain = k, reached
    return None


def gap_closed(synthetic_gain: float, reference_gain: float) -> float | None:
    """synthetic_gain / reference_gain: the fraction of the gain of extra real images that the synthetic
    set matches. None when reference_gain <= 0 (real images opened no gap). Negative when the synthetic
    set lowers accuracy, above 1 when it beats the real images."""
    if reference_gain <= 0:
        return None
    return synthetic_gain / reference_gain


def _pp(fraction: float, decimals: int) -> str:
    """An accuracy difference in signed percentage points, never "-0.0"."""
    value = round(100 * fraction, decimals)
    return f"{value if value else 0.0:+.{decimals}f}"


def _interval_text(gain: PairedGain) -> str:
    seeds = "paired seed" if gain.pairs == 1 else "paired seeds"
    return (f"{gain.confidence * 100:g}% CI {_pp(gain.ci_low, 1)} to {_pp(gain.ci_high, 1)}, "
            f"{gain.pairs} {seeds}")


def verdict(gain: PairedGain, reference_gain: float | None = None, reference_per_class: int | None = None,
            what: str = "Synthetic images") -> str:
    """One sentence on whether `what` changed test accuracy.

    "raised" / "lowered" only when the interval excludes zero; otherwise "No measurable effect". With a
    reference (the mean gain of `reference_per_class` extra real images per class, same seeds), a raise
    adds the share of that gain it matches; when the real images did not raise accuracy either, it says
    so. A single pair has no interval: the sentence gives the difference and says there are too few seeds.

    Raises:
        ValueError: only one of reference_gain and reference_per_class given.
    """
    if (reference_gain is None) != (reference_per_class is None):
        raise ValueError("verdict needs reference_gain and reference_per_class together, or neither")
    if not gain.has_interval:
        return (f"{what} changed test accuracy by {_pp(gain.mean, 1)} pp on a single paired seed: "
                f"too few seeds for a confidence interval (at least 2 needed).")
    interval = _interval_text(gain)
    if gain.ci_low > 0:
        sentence = f"{what} raised test accuracy by {_pp(gain.mean, 1)} pp ({interval})"
    elif gain.ci_high < 0:
        sentence = f"{what} lowered test accuracy by {_pp(gain.mean, 1)} pp ({interval})"
    else:
        sentence = f"No measurable effect: {_pp(gain.mean, 1)} pp ({interval})"
    if reference_gain is None:
        return sentence + "."
    real = f"{reference_per_class} extra real images per class"
    closed = gap_closed(gain.mean, reference_gain)
    if closed is None:
        if gain.ci_low > 0:
            return f"{sentence}; {real} did not raise accuracy ({_pp(reference_gain, 1)} pp), so there is no gap to close."
        return f"{sentence}; {real} did not raise accuracy either ({_pp(reference_gain, 1)} pp)."
    if gain.ci_low > 0:
        return f"{sentence}, closing {100 * closed:.0f}% of the gap to {real}."
    return f"{sentence}; {real} raised it by {_pp(reference_gain, 1)} pp."


def format_gain(gain: PairedGain) -> str:
    """A table cell: "+1.90 pp [+0.80, +3.00], p = 0.004" (the interval at gain.confidence); a single pair
    gives "+1.90 pp (1 seed, no CI)"."""
    if not gain.has_interval:
        return f"{_pp(gain.mean, 2)} pp (1 seed, no CI)"
    p_value = "p < 0.001" if gain.p_value < 0.001 else f"p = {gain.p_value:.3f}"
    return f"{_pp(gain.mean, 2)} pp [{_pp(gain.ci_low, 2)}, {_pp(gain.ci_high, 2)}], {p_value}"
