"""From cell results to what the report and `dvc metrics diff` say: per-column accuracies, paired gains
with their confidence intervals, the budget curve, the real-data reference and the headline.

A column is a grid column (model x augmentation x strategy, plus the ablation's, budget and reference
columns) over its seeds. Every gain compares a column with the real-only column of the same model and
augmentation, seed by seed (mvcaug.stats.paired_gain). The reference columns (real training split plus k
held-out real images per class) give the yardstick: what the same number of real images gains
(`ref_n<k>`), the share of that gain a synthetic set matches (`gap_closed`) and how many real images per
class its gain is worth (`exchange_rate`, read off the reference curve). The headline strategy, the one
the verdict speaks of, is chosen by validation accuracy, never by test accuracy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

from mvcaug.cells import REFERENCE, RunResult
from mvcaug.stats import PairedGain, exchange_rate, gap_closed, paired_gain, verdict
from mvcaug.synthetic_sets import MVC

SHORT = {"default": "baseline", "autoaugment": "aa", "randaugment": "ra", "trivialaugment": "ta"}
STRATEGY_SUFFIX = {"real": "", "combined": "syn", "rsp": "rsp", "two_phase": "two_phase", REFERENCE: "ref"}
SYNTHETIC_STRATEGIES = ("combined", "rsp", "two_phase")
STRATEGY_TITLES = {"combined": "combined", "rsp": "RSP", "two_phase": "two-phase"}
CONFIDENCE = 0.95


def column_name(baseline: str, strategy: str) -> str:
    """The paper's column names: baseline, aa, ra, syn, aa_syn, ... (rsp, two_phase and ref alike)."""
    short, suffix = SHORT[baseline], STRATEGY_SUFFIX[strategy]
    if not suffix:
        return short
    return suffix if short == "baseline" else f"{short}_{suffix}"


def result_column(result: RunResult) -> str:
    """A run's column: column_name, suffixed _<set> for runs on another synthetic set (syn_no_mvc) and _n<k>
    for budget and reference runs (syn_n5, ref_n20)."""
    cell = result.cell
    column = column_name(cell.baseline, cell.strategy)
    if cell.uses_synthetic and cell.synthetic_set != MVC:
        column = f"{column}_{cell.synthetic_set}"
    return f"{column}_n{cell.per_class}" if cell.per_class else column


@dataclass(frozen=True)
class Column:
    """One column's runs: test and validation accuracy by seed."""

    model: str
    baseline: str
    name: str
    strategy: str
    synthetic_set: str
    per_class: int
    test: dict[int, float]
    val: dict[int, float]


def columns(results: Sequence[RunResult]) -> dict[tuple[str, str], Column]:
    """{(model, column name): Column}, in the order the results come."""
    found: dict[tuple[str, str], Column] = {}
    for r in results:
        key = (r.cell.model, result_column(r))
        if key not in found:
            found[key] = Column(r.cell.model, r.cell.baseline, key[1], r.cell.strategy, r.cell.synthetic_set,
                                r.cell.per_class, {}, {})
        found[key].test[r.cell.seed] = r.test_acc
        found[key].val[r.cell.seed] = r.val_acc
    return found


def gain_over_baseline(column: Column, table: dict[tuple[str, str], Column]) -> PairedGain | None:
    """The paired gain of a column over the real-only column of its model and augmentation (None for that
    column itself, or when it is missing)."""
    control = table.get((column.model, column_name(column.baseline, "real")))
    if control is None or control.name == column.name or not set(control.test) & set(column.test):
        return None
    return paired_gain(column.test, control.test, CONFIDENCE)


def reference_curve(model: str, table: dict[tuple[str, str], Column]) -> list[tuple[int, float]]:
    """(k real images added per class, mean paired gain over the baseline) of the model's reference columns."""
    points = []
    for column in table.values():
        if column.model == model and column.strategy == REFERENCE:
            gain = gain_over_baseline(column, table)
            if gain is not None:
                points.append((column.per_class, gain.mean))
    return sorted(points)


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def summarise(results: Sequence[RunResult], images_per_class: int = 0) -> dict:
    """{model: {column: {acc_mean, acc_std, val_acc_mean, runs[, gain, gain_ci_low, gain_ci_high, gain_p]
    [, gap_closed, exchange_rate]}}}: `dvc metrics diff` shows flat keys such as small_cnn.syn.gain_ci_low.
    gap_closed and exchange_rate (real images per class, -1 when beyond the reference curve) are given to
    the synthetic columns when reference columns exist; the gap is to ref_n<images_per_class>."""
    table = columns(results)
    metrics: dict = {}
    for (model, name), column in sorted(table.items()):
        accs = list(column.test.values())
        entry = {
            "acc_mean": round(statistics.fmean(accs), 4),
            "acc_std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
            "val_acc_mean": round(statistics.fmean(column.val.values()), 4),
            "runs": len(accs),
        }
        gain = gain_over_baseline(column, table)
        if gain is not None:
            entry.update({key: value for key, value in (
                ("gain", _rounded(gain.mean)), ("gain_ci_low", _rounded(gain.ci_low)),
                ("gain_ci_high", _rounded(gain.ci_high)), ("gain_p", _rounded(gain.p_value))) if value is not None})
        metrics.setdefault(model, {})[name] = entry
    for model in metrics:
        curve = reference_curve(model, table)
        target = dict(curve).get(images_per_class)
        for name, entry in metrics[model].items():
            column = table[(model, name)]
            if column.strategy in SYNTHETIC_STRATEGIES and "gain" in entry and curve:
                if target is not None and (closed := gap_closed(entry["gain"], target)) is not None:
                    entry["gap_closed"] = round(closed, 4)
                rate = exchange_rate(curve, entry["gain"])
                entry["exchange_rate"] = -1.0 if rate is None else round(rate, 2)
    return metrics


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the t-interval of the mean over seeds (low = high = mean for a single value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def budget_curves(results: Sequence[RunResult], images_per_class: int) -> dict[str, dict[str, list[tuple]]]:
    """{model: {"synthetic": [(k, mean, low, high)], "real": [...]}}: test accuracy against the images added
    per class, 0 being the real-only baseline; synthetic = the first augmentation's combined columns
    (the full set at images_per_class), real = its reference columns. Means with their 95% t-interval."""
    table = columns(results)
    curves: dict[str, dict[str, list[tuple]]] = {}
    for (model, _), column in table.items():
        first = next(c.baseline for c in table.values() if c.model == model)
        kind = {"real": None, "combined": "synthetic", REFERENCE: "real"}.get(column.strategy, "")
        if column.baseline != first or kind == "" or (kind == "synthetic" and column.synthetic_set != MVC):
            continue  # other augmentations, rsp and two_phase, combined runs on another synthetic set
        point = (column.per_class or images_per_class, *mean_interval(list(column.test.values())))
        if kind is None:  # the baseline starts both curves
            for series in ("synthetic", "real"):
                curves.setdefault(model, {}).setdefault(series, []).append((0, *point[1:]))
        else:
            curves.setdefault(model, {}).setdefault(kind, []).append(point)
    for model in curves:
        if len(curves[model].get("real", [])) < 2:
            curves[model].pop("real", None)
        for series in curves[model].values():
            series.sort()
    return curves


@dataclass(frozen=True)
class Headline:
    """What the verdict speaks of: a model's synthetic strategy chosen on validation, and its numbers."""

    model: str
    column: str
    strategy: str
    gain: PairedGain
    reference_gain: float | None
    reference_per_class: int | None
    sentence: str


def headline(results: Sequence[RunResult], images_per_class: int) -> Headline | None:
    """The first model's synthetic strategy (of its first augmentation, on the MVC set, all images) with the
    best mean validation accuracy, its paired gain over real only, and the verdict sentence; None without
    synthetic runs. Validation picks; the test split only reports."""
    table = columns(results)
    if not table:
        return None
    model = next(iter(table.values())).model
    first = next(c.baseline for c in table.values() if c.model == model)
    candidates = [c for c in table.values() if c.model == model and c.baseline == first and not c.per_class
                  and c.name in {column_name(first, s) for s in SYNTHETIC_STRATEGIES}]
    candidates = [c for c in candidates if gain_over_baseline(c, table) is not None]
    if not candidates:
        return None
    chosen = max(candidates, key=lambda c: statistics.fmean(c.val.values()))
    gain = gain_over_baseline(chosen, table)
    reference = dict(reference_curve(model, table)).get(images_per_class)
    what = f"Synthetic images ({STRATEGY_TITLES[chosen.strategy]}, chosen on validation)"
    sentence = verdict(gain, reference, images_per_class if reference is not None else None, what=what)
    return Headline(model, chosen.name, chosen.strategy, gain, reference,
                    images_per_class if reference is not None else None, sentence)
