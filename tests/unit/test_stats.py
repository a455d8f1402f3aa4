"""Paired gains against scipy and a hand computation, the exchange rate along a more_real curve, and the
report's verdict sentences."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from mvcaug.judging.stats import (
    PairedGain, exchange_rate, format_gain, gap_closed, holm, paired_gain, rank_with_ties, verdict,
)

# Per-seed differences of exactly 1, 2 and 3 pp, keys in different orders, one extra seed on each side.
CONTROL = {3: 0.80, 1: 0.70, 2: 0.75, 7: 0.50}
TREATMENT = {1: 0.71, 9: 0.99, 2: 0.77, 3: 0.83}


def test_paired_gain_matches_a_hand_computation():
    # d = 1, 2, 3 pp: mean 2 pp, sd 1 pp, n = 3, t = 2 / (1 / sqrt 3) = 2 sqrt 3 with 2 degrees of freedom.
    # For 2 degrees of freedom the t distribution has a closed form, F(t) = 1/2 + t / (2 sqrt(2 + t^2)):
    # two-sided p = 1 - t / sqrt(2 + t^2), and the 97.5% quantile solves t / sqrt(2 + t^2) = 0.95.
    gain = paired_gain(TREATMENT, CONTROL)
    t = 2 * math.sqrt(3)
    quantile = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))  # 4.3027, the table's 4.303
    half_width = quantile * 0.01 / math.sqrt(3)
    assert gain.pairs == 3 and gain.confidence == 0.95
    assert gain.mean == pytest.approx(0.02, abs=1e-12)
    assert gain.ci_low == pytest.approx(0.02 - half_width, abs=1e-9)
    assert gain.ci_high == pytest.approx(0.02 + half_width, abs=1e-9)
    assert gain.p_value == pytest.approx(1 - t / math.sqrt(2 + t**2), rel=1e-9)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_paired_gain_equals_scipys_paired_t_test_on_the_common_seeds(confidence):
    treatment = {s: 0.6 + 0.013 * s + 0.004 * (s % 3) for s in range(8)}
    control = {s: 0.6 + 0.011 * s - 0.002 * (s % 2) for s in reversed(range(2, 10))}
    common = range(2, 8)
    expected = stats.ttest_rel([treatment[s] for s in common], [control[s] for s in common])
    interval = expected.confidence_interval(confidence_level=confidence)
    gain = paired_gain(treatment, control, confidence)
    assert gain.pairs == 6
    assert gain.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert (gain.ci_low, gain.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-12)


def test_paired_gain_ignores_seeds_present_on_one_side_only():
    common = [1, 2, 3]
    assert paired_gain(TREATMENT, CONTROL) == paired_gain({s: TREATMENT[s] for s in common},
                                                          {s: CONTROL[s] for s in common})


def test_paired_gain_without_common_seeds_raises():
    with pytest.raises(ValueError, match="no seed in common"):
        paired_gain({1: 0.8, 2: 0.9}, {3: 0.7})


def test_paired_gain_rejects_a_confidence_outside_zero_and_one():
    with pytest.raises(ValueError, match="confidence"):
        paired_gain(TREATMENT, CONTROL, confidence=95)


def test_a_single_pair_has_a_mean_but_no_interval_or_p_value():
    gain = paired_gain({4: 0.5, 5: 0.9}, {4: 0.48})
    assert gain.pairs == 1 and gain.mean == pytest.approx(0.02)
    assert math.isnan(gain.ci_low) and math.isnan(gain.ci_high) and math.isnan(gain.p_value)
    assert verdict(gain) == ("Synthetic images changed test accuracy by +2.0 pp on a single paired seed: "
                             "too few seeds for a confidence interval (at least 2 needed).")
    assert format_gain(gain) == "+2.00 pp (1 seed, no CI)"


def test_identical_differences_give_no_zero_width_interval_and_no_p_zero():
    # 0.85 - 0.80 and 0.75 - 0.70 differ in the last bits of a float; they count as the same 5 pp.
    gain = paired_gain({1: 0.85, 2: 0.75, 3: 0.65}, {1: 0.80, 2: 0.70, 3: 0.60})
    assert gain.mean == pytest.approx(0.05) and gain.pairs == 3
    assert math.isnan(gain.ci_low) and math.isnan(gain.ci_high) and math.isnan(gain.p_value)
    assert not gain.has_interval
    assert verdict(gain) == ("Synthetic images changed test accuracy by +5.0 pp on each of 3 paired seeds alike: "
                             "too few seeds to estimate its spread, so no confidence interval.")
    assert format_gain(gain) == "+5.00 pp (3 seeds alike, no CI)"


def test_no_change_on_any_seed_is_no_interval_either():
    gain = paired_gain({1: 0.85, 2: 0.75}, {1: 0.85, 2: 0.75})
    assert gain.mean == 0.0 and not gain.has_interval and math.isnan(gain.p_value)
    assert "too few seeds" in verdict(gain)


MORE_REAL_CURVE = [(10, 0.03), (5, 0.02), (20, 0.046)]  # unsorted on purpose


@pytest.mark.parametrize("gain, expected", [(0.01, 2.5), (0.02, 5.0), (0.025, 7.5), (0.038, 15.0), (0.046, 20.0)])
def test_exchange_rate_interpolates_a_monotone_curve_from_the_implied_origin(gain, expected):
    assert exchange_rate(MORE_REAL_CURVE, gain) == pytest.approx(expected, rel=1e-12)


def test_exchange_rate_of_no_gain_is_zero_images():
    assert exchange_rate(MORE_REAL_CURVE, 0.0) == 0.0


def test_a_harmful_set_gets_a_negative_exchange_rate_not_zero():
    # the first segment gains 2 pp for 5 images: -1 pp reads as -2.5 real images per class
    assert exchange_rate(MORE_REAL_CURVE, -0.01) == pytest.approx(-2.5)
    assert exchange_rate([(5, -0.01), (10, 0.02)], -0.01) == pytest.approx(-5.0)  # first point that gained
    assert exchange_rate([(5, -0.01)], -0.01) is None  # real images gained nothing: no slope to read it by


def test_exchange_rate_beyond_the_curve_is_none():
    assert exchange_rate(MORE_REAL_CURVE, 0.0461) is None
    assert exchange_rate([], 0.01) is None


def test_exchange_rate_reads_a_non_monotone_curve_at_its_first_crossing():
    dipping = [(5, 0.02), (10, 0.01), (20, 0.03)]
    assert exchange_rate(dipping, 0.015) == pytest.approx(3.75)  # not 12.5, on the way back up
    assert exchange_rate(dipping, 0.025) == pytest.approx(17.5)


@pytest.mark.parametrize("curve", [[(0, 0.0), (5, 0.02)], [(5, 0.02), (5, 0.03)], [(-5, 0.01)]])
def test_exchange_rate_rejects_non_positive_or_repeated_k(curve):
    with pytest.raises(ValueError, match="positive and distinct"):
        exchange_rate(curve, 0.01)


def test_gap_closed_is_a_signed_fraction_of_a_positive_more_real_gain():
    assert gap_closed(0.019, 0.046) == pytest.approx(0.019 / 0.046)
    assert gap_closed(-0.01, 0.02) == pytest.approx(-0.5)
    assert gap_closed(0.03, 0.02) == pytest.approx(1.5)
    assert gap_closed(0.01, 0.0) is None
    assert gap_closed(0.01, -0.02) is None


def test_a_tiny_more_real_gain_is_no_gap_to_close():
    assert gap_closed(0.003, 0.001) is None  # not 300%: 0.1 pp is below the 0.5 pp floor
    assert gap_closed(0.003, 0.005) == pytest.approx(0.6)


def test_holm_adjusts_step_down_and_keeps_the_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, math.nan, 0.2]) == pytest.approx([0.5, math.nan, 0.4], nan_ok=True)
    assert holm([0.45, 0.4]) == pytest.approx([0.8, 0.8])  # never below an earlier step
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1


RAISED = PairedGain(0.019, 0.008, 0.030, 0.004, 5, 0.95)
NO_EFFECT = PairedGain(-0.001, -0.012, 0.010, 0.82, 5, 0.95)
LOWERED = PairedGain(-0.020, -0.031, -0.009, 0.006, 5, 0.95)


@pytest.mark.parametrize("gain, sentence", [
    (RAISED, "Synthetic images raised test accuracy by +1.9 pp (95% CI +0.8 to +3.0, 5 paired seeds)."),
    (NO_EFFECT, "No measurable effect: -0.1 pp (95% CI -1.2 to +1.0, 5 paired seeds)."),
    (LOWERED, "Synthetic images lowered test accuracy by -2.0 pp (95% CI -3.1 to -0.9, 5 paired seeds)."),
    (PairedGain(0.05, 0.001, 0.099, 0.049, 3, 0.9),
     "Synthetic images raised test accuracy by +5.0 pp (90% CI +0.1 to +9.9, 3 paired seeds)."),
])
def test_verdict_without_a_more_real_gain(gain, sentence):
    assert verdict(gain) == sentence


@pytest.mark.parametrize("gain, more_real_gain, sentence", [
    (RAISED, 0.046, "Synthetic images raised test accuracy by +1.9 pp (95% CI +0.8 to +3.0, 5 paired seeds), "
                    "closing 41% of the gap to 20 extra real images per class."),
    (RAISED, -0.003, "Synthetic images raised test accuracy by +1.9 pp (95% CI +0.8 to +3.0, 5 paired seeds); "
                     "20 extra real images per class did not raise accuracy (-0.3 pp), so there is no gap to close."),
    (NO_EFFECT, 0.0, "No measurable effect: -0.1 pp (95% CI -1.2 to +1.0, 5 paired seeds); "
                     "20 extra real images per class did not raise accuracy either (+0.0 pp)."),
    (NO_EFFECT, 0.046, "No measurable effect: -0.1 pp (95% CI -1.2 to +1.0, 5 paired seeds); "
                       "20 extra real images per class raised it by +4.6 pp."),
    (LOWERED, 0.046, "Synthetic images lowered test accuracy by -2.0 pp (95% CI -3.1 to -0.9, 5 paired seeds); "
                     "20 extra real images per class raised it by +4.6 pp."),
])
def test_verdict_with_a_more_real_gain(gain, more_real_gain, sentence):
    assert verdict(gain, more_real_gain=more_real_gain, more_real_per_class=20) == sentence


def test_verdict_names_what_was_tested():
    assert verdict(LOWERED, what="RSP").startswith("RSP lowered test accuracy by -2.0 pp")


def test_verdict_needs_the_more_real_gain_and_its_size_together():
    with pytest.raises(ValueError, match="together"):
        verdict(RAISED, more_real_gain=0.046)


def test_verdict_of_measured_gains_follows_the_interval():
    assert verdict(paired_gain({1: 0.82, 2: 0.85, 3: 0.80, 4: 0.88, 5: 0.84},
                               {1: 0.80, 2: 0.83, 3: 0.79, 4: 0.85, 5: 0.83})).startswith(
        "Synthetic images raised test accuracy by +1.8 pp (95% CI +0.8 to +2.8, 5 paired seeds)")
    # The hand example's interval (-0.5 to +4.5 pp) holds zero: a +2 pp mean alone is no effect.
    assert verdict(paired_gain(TREATMENT, CONTROL)) == (
        "No measurable effect: +2.0 pp (95% CI -0.5 to +4.5, 3 paired seeds).")


def test_format_gain_gives_two_decimals_and_the_p_value():
    assert format_gain(RAISED) == "+1.90 pp [+0.80, +3.00], p = 0.004"
    assert format_gain(NO_EFFECT) == "-0.10 pp [-1.20, +1.00], p = 0.820"
    assert format_gain(PairedGain(0.05, 0.05, 0.05, 0.0, 3, 0.95)) == "+5.00 pp [+5.00, +5.00], p < 0.001"


def test_a_sweep_ranking_calls_a_tie_a_tie():
    scores = {"filter off": (0.951, 0.010, 5), "defaults": (0.947, 0.012, 5), "steps 200": (0.928, 0.004, 5)}
    ranked = rank_with_ties(scores)
    assert [r.name for r in ranked] == ["filter off", "defaults", "steps 200"]
    assert ranked[0].tied and ranked[0].difference == 0.0
    assert ranked[1].tied and ranked[1].ci_low < ranked[1].difference < 0 < ranked[1].ci_high  # 0.4 pp: noise
    assert not ranked[2].tied and ranked[2].ci_high < 0  # 2.3 pp below, tightly measured: worse
    # the interval is Welch's: at the interval's own level, scipy's Welch test from the same summary
    # statistics puts the interval's end exactly at p = 0.05
    end = ranked[1].ci_high
    shifted = stats.ttest_ind_from_stats(0.947 - end, 0.012, 5, 0.951, 0.010, 5, equal_var=False)
    assert shifted.pvalue == pytest.approx(0.05, abs=1e-9)


def test_a_small_real_image_gain_is_not_called_no_gain():
    gain = paired_gain({1: 0.83, 2: 0.85, 3: 0.86}, {1: 0.80, 2: 0.82, 3: 0.84})
    sentence = verdict(gain, more_real_gain=0.003, more_real_per_class=20)
    assert sentence.endswith("; 20 extra real images per class raised it by only +0.3 pp, too little a gap to close.")
    assert "did not raise" in verdict(gain, more_real_gain=-0.002, more_real_per_class=20)
