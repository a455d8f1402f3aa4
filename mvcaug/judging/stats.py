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

__all__ = ["PairedGain", "paired_gain", "nested_gain", "exchange_rate", "gap_closed", "holm", "verdict",
    "format_gain", "rank_with_ties"]

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
    generators: int = 1
    """Generators (finetune-generate draws, generate.replicates) the gain averages over. Above 1, `pairs` counts
    them: the interval is the t-interval over the per-generator mean gains (nested_gain)."""

    @property
    def has_interval(self) -> bool:
        """Whether the pairs gave a spread to estimate an interval and a p-value from: two or more pairs
        whose differences are not all the same."""
        return self.pairs >= 2 and math.isfinite(self.ci_low) and math.isfinite(self.ci_high)


def paired_gain(treatment: Mapping[int, float], control: Mapping[int, float], confidence: float = 0.95) -> PairedGain:
    """The gain of `treatment` over `control`, paired by seed (the mappings' keys).

    Only seeds present in both count; a seed in one mapping only is ignored. When every pair differs by
    the same amount (zero variance), there is no spread to estimate: the interval and p-value are NaN
    (has_interval is False), as for a single pair. A zero-width interval with p = 0 (the t-test's limit,
    what scipy returns with a warning) would claim certainty that a handful of seeds cannot give: five
    seeds that happen to agree to the test image say "too few seeds", not "proven".

    Raises:
        ValueError: no seed in common, a confidence outside (0, 1), or a non-finite accuracy.
    """
    from scipy import stats

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
        return PairedGain(0.0 if abs(mean) <= SAME_DIFFERENCE_TOLERANCE else mean, math.nan, math.nan, math.nan,
                          len(seeds), confidence)
    test = stats.ttest_rel(treated, controlled)
    interval = test.confidence_interval(confidence_level=confidence)
    return PairedGain(mean, float(interval.low), float(interval.high), float(test.pvalue), len(seeds), confidence)


def nested_gain(treatment: Mapping[int, Mapping[int, float]], control: Mapping[int, float],
                confidence: float = 0.95) -> PairedGain:
    """The gain of a synthetic set drawn by several generators ({generator: {seed: accuracy}}) over `control`
    ({seed: accuracy}), the classifier seeds nested inside each generator.

    Each generator's gain is its mean paired difference over the seeds it shares with the control; the interval
    is the t-interval over those per-generator gains (generators - 1 degrees of freedom), so it covers the
    generator draw (fine-tuning, mixing, generation) as well as the classifier seeds inside it. Analysing the
    generator means is the textbook treatment of a nested design with equal seeds per generator; with few
    generators it is wide, and it should be: three draws say little about a fourth. One generator gives
    paired_gain, unchanged.

    Raises:
        ValueError: no generator, or a generator with no seed in common with the control.
    """
    from scipy import stats

    if not treatment:
        raise ValueError("nested_gain needs at least one generator")
    if len(treatment) == 1:
        return paired_gain(next(iter(treatment.values())), control, confidence)
    means = np.array([paired_gain(treatment[g], control, confidence).mean for g in sorted(treatment)])
    mean, count = float(means.mean()), len(means)
    if np.ptp(means) <= SAME_DIFFERENCE_TOLERANCE:
        return PairedGain(mean, math.nan, math.nan, math.nan, count, confidence, generators=count)
    test = stats.ttest_1samp(means, 0.0)
    interval = test.confidence_interval(confidence_level=confidence)
    return PairedGain(mean, float(interval.low), float(interval.high), float(test.pvalue), count, confidence,
                      generators=count)


def exchange_rate(more_real_curve: Sequence[tuple[float, float]], gain: float) -> float | None:
    """How many extra real images per class give `gain`, read off the more_real curve.

    Args:
        more_real_curve: (k real images added per class, mean test-accuracy gain over the real-only baseline)
            points with k > 0, in any order; the point (0, 0) is implied.
        gain: the accuracy gain to convert (e.g. the synthetic set's mean paired gain).

    Returns:
        0.0 when gain == 0; otherwise k at the first crossing of `gain`, walking the curve in increasing k
        and interpolating linearly between neighbouring points. A curve that is not monotone (a noisy
        mean can dip) is read at its first crossing: the fewest real images seen to reach the gain.
        None when the curve never reaches the gain (the caller says "more than" the largest k).
        A harmful set (gain < 0) gets a negative rate: the curve's first segment, from the origin to the
        first point that gained anything, extended below zero (as many real images per class as would
        have to be taken away at that slope). Reporting 0 would put a harmful set level with a useless
        one. None when no point of the curve gained anything (no slope to read it by).

    Raises:
        ValueError: a non-finite gain or point, a k <= 0, or the same k twice.
    """
    if not math.isfinite(gain):
        raise ValueError(f"gain must be finite, got {gain}")
    points = sorted((float(k), float(g)) for k, g in more_real_curve)
    ks = [k for k, _ in points]
    if not all(math.isfinite(k) and math.isfinite(g) for k, g in points):
        raise ValueError(f"more_real curve points must be finite, got {points}")
    if any(k <= 0 for k in ks) or len(set(ks)) != len(ks):
        raise ValueError(f"more_real curve k must be positive and distinct ((0, 0) is implied), got {ks}")
    if gain == 0:
        return 0.0
    if gain < 0:
        first = next(((k, g) for k, g in points if g > 0), None)
        return None if first is None else gain / first[1] * first[0]
    previous_k, previous_gain = 0.0, 0.0
    for k, reached in points:
        # previous_gain < gain here: the walk stops at the first point that reaches it.
        if reached >= gain:
            return previous_k + (gain - previous_gain) / (reached - previous_gain) * (k - previous_k)
        previous_k, previous_gain = k, reached
    return None


GAP_FLOOR = 0.005
"""The smallest real-image gain (0.5 pp) that a share of it is computed for. Below it the ratio is noise
divided by almost nothing: a synthetic gain of +0.3 pp over a more_real gain of +0.1 pp is not "300% of
the gap closed"; the report says there is no gap to close."""


def gap_closed(synthetic_gain: float, more_real_gain: float, floor: float = GAP_FLOOR) -> float | None:
    """synthetic_gain / more_real_gain: the fraction of the gain of extra real images that the synthetic
    set matches. None when more_real_gain < floor (real images opened no gap worth a share). Negative when
    the synthetic set lowers accuracy, above 1 when it beats the real images."""
    if not more_real_gain >= floor:
        return None
    return synthetic_gain / more_real_gain


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values tested together (same order in and out; NaN stays NaN).

    The headline strategy is the best of several on validation; its test p-value, read alone, would
    ignore that the others were tried too. Holm's adjustment bounds the chance that any of the strategies
    is called an effect when none has one, whichever is then shown first.
    """
    order = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def _pp(fraction: float, decimals: int) -> str:
    """An accuracy difference in signed percentage points, never "-0.0"."""
    value = round(100 * fraction, decimals)
    return f"{value if value else 0.0:+.{decimals}f}"


def _interval_text(gain: PairedGain) -> str:
    if gain.generators > 1:
        return (f"{gain.confidence * 100:g}% CI {_pp(gain.ci_low, 1)} to {_pp(gain.ci_high, 1)}, "
                f"{gain.generators} generators, paired seeds nested in each")
    seeds = "paired seed" if gain.pairs == 1 else "paired seeds"
    return (f"{gain.confidence * 100:g}% CI {_pp(gain.ci_low, 1)} to {_pp(gain.ci_high, 1)}, "
            f"{gain.pairs} {seeds}")


def verdict(gain: PairedGain, more_real_gain: float | None = None, more_real_per_class: int | None = None,
            what: str = "Synthetic images", adjusted_p: float | None = None, tried: int = 1) -> str:
    """One sentence on whether `what` changed test accuracy.

    "raised" / "lowered" only when the interval excludes zero and, when `what` is the best of `tried`
    strategies, their Holm-adjusted p-value (`adjusted_p`) is below 1 - confidence too; otherwise "No
    measurable effect" (saying so when only the adjustment for the strategies tried takes it away). With a
    more_real gain (the mean gain of `more_real_per_class` extra real images per class, same seeds), a raise
    adds the share of that gain it matches; when the real images did not raise accuracy either, it says
    so. A single pair has no interval: the sentence gives the difference and says there are too few seeds.

    Raises:
        ValueError: only one of more_real_gain and more_real_per_class given.
    """
    if (more_real_gain is None) != (more_real_per_class is None):
        raise ValueError("verdict needs more_real_gain and more_real_per_class together, or neither")
    if gain.pairs == 1:
        return (f"{what} changed test accuracy by {_pp(gain.mean, 1)} pp on a single paired seed: "
                f"too few seeds for a confidence interval (at least 2 needed).")
    if not gain.has_interval:
        units = "generators" if gain.generators > 1 else "seeds"
        paired = "" if gain.generators > 1 else "paired "
        return (f"{what} changed test accuracy by {_pp(gain.mean, 1)} pp on each of {gain.pairs} {paired}{units} "
                f"alike: too few {units} to estimate its spread, so no confidence interval.")
    interval = _interval_text(gain)
    if tried > 1 and adjusted_p is not None:
        interval += f"; Holm-adjusted p = {adjusted_p:.3f} over the {tried} strategies tried"
        if (gain.ci_low > 0 or gain.ci_high < 0) and not adjusted_p < 1 - gain.confidence:
            return (f"No measurable effect once the {tried} strategies tried are accounted for: {_pp(gain.mean, 1)} pp "
                    f"({interval}).")
    if gain.ci_low > 0:
        sentence = f"{what} raised test accuracy by {_pp(gain.mean, 1)} pp ({interval})"
    elif gain.ci_high < 0:
        sentence = f"{what} lowered test accuracy by {_pp(gain.mean, 1)} pp ({interval})"
    else:
        sentence = f"No measurable effect: {_pp(gain.mean, 1)} pp ({interval})"
    if more_real_gain is None:
        return sentence + "."
    real = f"{more_real_per_class} extra real images per class"
    closed = gap_closed(gain.mean, more_real_gain)
    if closed is None and more_real_gain > 0:  # below GAP_FLOOR: a gain, but too small to take a share of
        return f"{sentence}; {real} raised it by only {_pp(more_real_gain, 1)} pp, too little a gap to close."
    if closed is None:
        if gain.ci_low > 0:
            return f"{sentence}; {real} did not raise accuracy ({_pp(more_real_gain, 1)} pp), so there is no gap to close."
        return f"{sentence}; {real} did not raise accuracy either ({_pp(more_real_gain, 1)} pp)."
    if gain.ci_low > 0:
        return f"{sentence}, closing {100 * closed:.0f}% of the gap to {real}."
    return f"{sentence}; {real} raised it by {_pp(more_real_gain, 1)} pp."


def format_gain(gain: PairedGain) -> str:
    """A table cell: "+1.90 pp [+0.80, +3.00], p = 0.004" (the interval at gain.confidence); a single pair
    gives "+1.90 pp (1 seed, no CI)"."""
    if not gain.has_interval:
        seeds = ("1 seed" if gain.pairs == 1 else f"{gain.pairs} generators alike" if gain.generators > 1
                 else f"{gain.pairs} seeds alike")
        return f"{_pp(gain.mean, 2)} pp ({seeds}, no CI)"
    p_value = "p < 0.001" if gain.p_value < 0.001 else f"p = {gain.p_value:.3f}"
    return f"{_pp(gain.mean, 2)} pp [{_pp(gain.ci_low, 2)}, {_pp(gain.ci_high, 2)}], {p_value}"


@dataclass(frozen=True)
class RankedSetting:
    """One setting of a sweep, ranked by its mean score, with how far it stands from the top one."""

    name: str
    mean: float
    difference: float
    """mean - the top setting's mean (0 for the top)."""
    ci_low: float
    """Lower end of the Welch t-interval of that difference (NaN for the top, or without spread)."""
    ci_high: float
    tied: bool
    """The interval holds 0: the data cannot tell this setting from the top one."""


def rank_with_ties(scores: Mapping[str, tuple[float, float, int]], confidence: float = 0.95) -> list[RankedSetting]:
    """Settings ranked by mean score, each compared with the top one.

    Args:
        scores: {setting: (mean, standard deviation over seeds, seeds)}, e.g. validation accuracies.

    Returns:
        Best first. A setting whose difference from the top has a Welch t-interval holding zero is `tied`:
        a sweep whose settings differ by less than one validation image per seed ranks noise, and says so
        instead of crowning a winner. The top is tied with itself.
    """
    from scipy import stats

    ranked = sorted(scores.items(), key=lambda item: item[1][0], reverse=True)
    if not ranked:
        return []
    _, (top_mean, top_std, top_n) = ranked[0]
    out = []
    for name, (mean, std, n) in ranked:
        difference = mean - top_mean
        if name == ranked[0][0]:
            out.append(RankedSetting(name, mean, 0.0, math.nan, math.nan, True))
            continue
        variance = (std**2 / n if n else math.inf) + (top_std**2 / top_n if top_n else math.inf)
        if not math.isfinite(variance):  # a spread that was not recorded: nothing tells the two apart
            out.append(RankedSetting(name, mean, difference, math.nan, math.nan, True))
            continue
        if variance == 0:
            tied = abs(difference) <= SAME_DIFFERENCE_TOLERANCE
            out.append(RankedSetting(name, mean, difference, math.nan, math.nan, tied))
            continue
        terms = [(v, k) for v, k in ((std**2 / n, n), (top_std**2 / top_n, top_n)) if v > 0 and k > 1]
        dof = variance**2 / sum(v**2 / (k - 1) for v, k in terms) if terms else 1.0
        half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * math.sqrt(variance)
        low, high = difference - half, difference + half
        out.append(RankedSetting(name, mean, difference, low, high, low <= 0 <= high))
    return out
