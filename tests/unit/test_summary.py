"""Summaries of cell results: per-column accuracies, paired gains with CIs, the real-data reference,
the budget curve and the headline chosen on validation."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from mvcaug.cells import Cell, RunResult
from mvcaug.summary import budget_curves, headline, result_column, summarise


def run(strategy: str, seed: int, test: float, val: float = 0.5, baseline: str = "default", per_class: int = 0,
        synthetic_set: str = "mvc", model: str = "small_cnn") -> RunResult:
    return RunResult(Cell(model, baseline, strategy, seed, synthetic_set, per_class), 1, val, test)


def grid() -> list[RunResult]:
    """Three seeds: real only, combined (+2 pp on every seed but one), RSP, budget and reference cells."""
    real = [0.80, 0.82, 0.84]
    out = [run("real", s, acc, val=0.80) for s, acc in enumerate(real)]
    out += [run("combined", s, acc + d, val=0.86) for s, (acc, d) in enumerate(zip(real, (0.02, 0.02, 0.03)))]
    out += [run("rsp", s, acc - 0.01, val=0.90) for s, acc in enumerate(real)]  # best on validation, worse on test
    out += [run("combined", s, acc + 0.01, per_class=5) for s, acc in enumerate(real)]
    out += [run("reference", s, acc + g, per_class=k) for k, g in ((5, 0.02), (10, 0.03), (20, 0.04))
            for s, acc in enumerate(real)]
    return out


def test_columns_and_paired_gains_with_their_interval():
    metrics = summarise(grid(), images_per_class=20)["small_cnn"]
    assert set(metrics) == {"baseline", "syn", "rsp", "syn_n5", "ref_n5", "ref_n10", "ref_n20"}
    syn = metrics["syn"]
    differences = [0.02, 0.02, 0.03]
    interval = stats.ttest_rel([0.82, 0.84, 0.87], [0.80, 0.82, 0.84]).confidence_interval(0.95)
    assert syn["gain"] == round(sum(differences) / 3, 4)
    assert syn["gain_ci_low"] == round(interval.low, 4) and syn["gain_ci_high"] == round(interval.high, 4)
    assert syn["gain_p"] == round(stats.ttest_rel([0.82, 0.84, 0.87], [0.80, 0.82, 0.84]).pvalue, 4)
    assert "gain" not in metrics["baseline"] and metrics["baseline"]["runs"] == 3
    assert metrics["ref_n20"]["gain"] == 0.04


def test_gap_closed_and_exchange_rate_come_from_the_reference_curve():
    syn = summarise(grid(), images_per_class=20)["small_cnn"]["syn"]
    gain = round((0.02 + 0.02 + 0.03) / 3, 4)
    assert syn["gap_closed"] == round(gain / 0.04, 4)  # the gap to 20 extra real images per class
    # the reference curve: (0, 0), (5, 0.02), (10, 0.03), (20, 0.04): gain 0.0233 lies between 5 and 10
    assert syn["exchange_rate"] == round(5 + (gain - 0.02) / 0.01 * 5, 2)
    rsp = summarise(grid(), images_per_class=20)["small_cnn"]["rsp"]
    assert rsp["exchange_rate"] == 0.0 and rsp["gap_closed"] == round(-0.01 / 0.04, 4)


def test_without_reference_cells_there_is_no_gap():
    without = [r for r in grid() if r.cell.strategy != "reference"]
    syn = summarise(without, images_per_class=20)["small_cnn"]["syn"]
    assert "gap_closed" not in syn and "exchange_rate" not in syn and "gain_ci_low" in syn


def test_the_headline_strategy_is_chosen_on_validation_not_test():
    chosen = headline(grid(), images_per_class=20)
    assert chosen.column == "rsp"  # the best validation accuracy, although its test gain is negative
    assert chosen.gain.mean == pytest.approx(-0.01)
    assert chosen.sentence.startswith("Synthetic images (RSP, chosen on validation) lowered test accuracy by -1.0 pp")
    assert chosen.reference_gain == pytest.approx(0.04) and chosen.reference_per_class == 20
    best_test_first = [r if r.cell.strategy != "rsp" else run("rsp", r.cell.seed, r.test_acc, val=0.5) for r in grid()]
    assert headline(best_test_first, 20).column == "syn"
    assert headline([r for r in grid() if r.cell.strategy == "real"], 20) is None


def test_the_budget_curve_starts_at_the_baseline_and_has_intervals():
    curves = budget_curves(grid(), images_per_class=20)["small_cnn"]
    assert [point[0] for point in curves["synthetic"]] == [0, 5, 20]
    assert [point[0] for point in curves["real"]] == [0, 5, 10, 20]
    k, mean, low, high = curves["synthetic"][-1]
    values = [0.82, 0.84, 0.87]
    half = stats.t.ppf(0.975, 2) * stats.tstd(values) / math.sqrt(3)
    assert mean == pytest.approx(sum(values) / 3) and (low, high) == pytest.approx((mean - half, mean + half))
    assert curves["synthetic"][0] == curves["real"][0]  # both start at real only
    others = grid() + [run("combined", s, 0.5, synthetic_set="no_mvc") for s in range(3)]
    assert budget_curves(others, 20)["small_cnn"]["synthetic"] == curves["synthetic"]  # the ablation is no point


def test_result_columns_name_sets_budgets_and_references():
    assert result_column(run("combined", 0, 0.5, synthetic_set="no_mvc")) == "syn_no_mvc"
    assert result_column(run("combined", 0, 0.5, per_class=5)) == "syn_n5"
    assert result_column(run("reference", 0, 0.5, per_class=20)) == "ref_n20"
    assert result_column(run("two_phase", 0, 0.5, baseline="randaugment")) == "ra_two_phase"
