"""The report, read at a glance: the answer first, then the tables a person reads, then images and curves.

1. the verdict sentence and the headline numbers (mvcaug.judging.summary: the strategy chosen on validation,
   its paired gain with a 95% CI, the real-data yardstick);
2. the budget curve (test accuracy against images added per class, synthetic and real, with CI bands);
3. tables: strategies with paired CIs, the paper's table, the MVC ablation, quality per class, a small
   quality summary, the filter's decisions, and where the time went;
4. real vs synthetic images per class, the images the filter dropped with their reasons;
5. curves (validation accuracy per epoch, fine-tuning loss) and every run.
One list of sections (`sections`) holds all of it; two jinja2 templates (templates/report.html.j2 and
report.md.j2) render that list, so the HTML and the Markdown report (the Prefect artifact) share every
title, note and table; the Markdown leaves out the charts, the image grids and the runs. Everything here
is pure: data in, one self-contained HTML string (images inline, charts as SVG) or Markdown out.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from PIL import Image

from mvcaug.core.throughput import describe, stage_throughput
from mvcaug.judging.cells import RunResult
from mvcaug.reporting.charts import COLOURS, Series, indexed, line_chart, running_mean
from mvcaug.judging.stats import format_gain, gap_closed
from mvcaug.judging.summary import (
    SHORT, STRATEGY_SUFFIX, Headline, column_name, columns, gain_over_baseline, result_column,
)
from mvcaug.data.synthetic_sets import UNMIXED, PRETRAINED
from mvcaug.io.catalog import FILES

__all__ = ["SampleRow", "DroppedImage", "pick_samples", "pick_dropped", "ReportData", "strategy_table",
    "ablation_table", "pretrained_table", "quality_per_class", "time_table", "pretrain_table", "render_html",
    "render_markdown", "mean_validation_curves"]

PAPER_COLUMNS = ("baseline", "aa", "ra", "ta", "syn", "aa_syn", "ra_syn", "ta_syn")
PAPER_TITLES = {"baseline": "Baseline", "aa": "AA", "ra": "RA", "ta": "TA", "syn": "Syn",
                "aa_syn": "AA+Syn", "ra_syn": "RA+Syn", "ta_syn": "TA+Syn"}
GRID_STRATEGIES = ("real", "combined", "rsp", "two_phase", "real_two_phase")
ABLATION_NOTE = ("Real + synthetic images generated from unmixed caption embeddings (P = Q = 0) vs from the MVC "
                 "mixes: same fine-tuned model, seeds, conditioning images and classifier settings.")
PRETRAINED_NOTE = ("Real + synthetic images from the pretrained model alone (text-to-image from the MVC mixes, no "
                   "conditioning image) vs from the fine-tuned model: same mixes, seeds and classifier settings.")
GAIN_NOTE = ("Gains are paired by seed against real only with the same augmentation (two-phase against real only "
             "on the same two-phase schedule, real_two_phase): mean difference in percentage points, 95% t-interval, "
             "paired t-test.")


@dataclass(frozen=True)
class SampleRow:
    """One class's images for the grid: real ones, synthetic ones and each synthetic's conditioning image."""

    label: str
    real: list[Image.Image]
    synthetic: list[Image.Image]
    conditioning: list[Image.Image]


@dataclass(frozen=True)
class DroppedImage:
    """A synthetic image the filter dropped, with its class and reason."""

    label: str
    reason: str
    image: Image.Image


DROPPED_SHOWN = 40
"""Dropped images shown in the report at most (the first ones of each reason, in class order)."""


@dataclass(frozen=True)
class SamplePick:
    """One class's rows for the sample grid, chosen before any image is read: real training rows of the manifest
    and kept synthetic rows of the filter's decisions (each with its cond_id, the conditioning image)."""

    label: str
    real: list[dict]
    synthetic: list[dict]


def pick_samples(manifest_rows: Sequence[Mapping], decisions: Sequence[Mapping], per_class: int) -> list[SamplePick]:
    """For every class of the real training split (sorted), its first `per_class` training images (manifest order)
    and its first `per_class` kept synthetic images (decision order). The first, not a random draw, so a rerun
    shows the same images; and kept ones only, since the grid shows what the classifiers trained on (the filter's
    drops have their own section, pick_dropped)."""
    real = [dict(row) for row in manifest_rows if row["split"] == "train"]
    return [SamplePick(label, [row for row in real if row["label"] == label][:per_class],
                       [dict(row) for row in decisions if row["label"] == label and row["kept"]][:per_class])
            for label in sorted({row["label"] for row in real})]


def pick_dropped(decisions: Sequence[Mapping], limit: int = DROPPED_SHOWN) -> list[dict]:
    """The dropped rows shown (the flagged ones, with the filter off), at most `limit`: one of each reason in turn
    (reasons in the order they first occur) while every reason has one left, then the rest in decision order. A
    reason that drops hundreds of images then does not hide the one that dropped a few."""
    dropped = [dict(row) for row in decisions if row["reason"]]
    by_reason: dict[str, list[int]] = {}
    for i, row in enumerate(dropped):
        by_reason.setdefault(row["reason"], []).append(i)
    turns = [i for round_ in zip(*by_reason.values()) for i in round_]
    taken = set(turns)
    return [dropped[i] for i in turns + [i for i in range(len(dropped)) if i not in taken]][:limit]


@dataclass
class ReportData:
    """Everything the report shows; the report task reads it, the functions here only render it."""

    metrics: dict
    results: Sequence[RunResult]
    headline: Headline | None = None
    budget: dict[str, dict[str, list[tuple]]] = field(default_factory=dict)
    quality: dict | None = None
    filter_metrics: dict | None = None
    stage_times: dict[str, dict] = field(default_factory=dict)
    samples: Sequence[SampleRow] = ()
    dropped: Sequence[DroppedImage] = ()
    losses: Sequence[float] = ()
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    mix_steps: tuple[int, int] | None = None
    images_per_class: int = 0
    coverage: str = ""
    """Which sources of variation the verdict's intervals cover (mvcaug.judging.summary.interval_coverage)."""
    pretrain: dict | None = None
    """The pretrain stage's metrics.json (source, corpus size, self-check)."""
    pretrain_curve: Sequence[dict] = ()
    """Its self_check.csv rows (step, sample_accuracy, heldout_accuracy, ratio), each with its seconds of training
    where the run recorded them ("" otherwise)."""
    pretrain_grids: Sequence[tuple[str, Image.Image]] = ()
    """(caption, image): a grid of the corpus and of the pretrained model's own samples."""
    corpus_words: str = "pretraining-corpus images"
    """What the corpus cells add: the glyph corpus's images, or the retrieved real images of train.retrieval_folder."""
    title: str = "mvcaug report"


# --- tables (header, rows) shared by HTML and Markdown -------------------------------------------------


def _percent(cell: dict | None) -> str:
    return "–" if cell is None else f"{100 * cell['acc_mean']:.2f} ± {100 * cell['acc_std']:.2f}"


def _cell_text(cell: dict | None) -> str:
    """mean ± std over seeds, with the mean gain in pp when the column has one."""
    if cell is None:
        return "–"
    gain = f" ({100 * cell['gain']:+.2f})" if "gain" in cell else ""
    return _percent(cell) + gain


def headline_table(data: ReportData) -> tuple[list[str], list[list[str]]]:
    """The numbers behind the verdict."""
    h = data.headline
    if h is None:
        return [], []
    model = data.metrics[h.model]
    chosen = model[h.column]
    rows = [["real only (baseline)", _percent(model.get("baseline"))],
            [f"{h.strategy} with synthetic images (chosen on validation)", _percent(chosen)],
            ["gain, paired over seeds" if h.gain.generators == 1 else
             f"gain, over {h.gain.generators} generators (seeds paired and nested in each)", format_gain(h.gain)]]
    per_generator = [chosen[key] for key in sorted((k for k in chosen if k.startswith("gain_generator_")),
                                                    key=lambda k: int(k.rsplit("_", 1)[1]))]
    if per_generator:
        rows.append([f"gain of each generator (seeds + 0 to + {len(per_generator) - 1})",
                     ", ".join(f"{100 * value:+.2f} pp" for value in per_generator)])
    if "gain_boot_low" in chosen:
        over = "seeds and test images" if h.gain.generators == 1 else "generators, seeds and test images"
        rows.append([f"gain, bootstrap over {over}",
                     f"[{100 * chosen['gain_boot_low']:+.2f}, {100 * chosen['gain_boot_high']:+.2f}] pp"])
    if "gain_p_holm" in chosen:
        rows.append(["p, Holm-adjusted over the strategies the headline was chosen from", f"{chosen['gain_p_holm']:.3f}"])
    if h.more_real_gain is not None:
        rows.append([f"gain of {h.more_real_per_class} extra real images per class", f"{100 * h.more_real_gain:+.2f} pp"])
        if "gap_closed" in chosen:
            ci = (f" [{100 * chosen['gap_closed_ci_low']:.0f}%, {100 * chosen['gap_closed_ci_high']:.0f}%]"
                  if "gap_closed_ci_low" in chosen else "")
            rows.append(["gap to those real images closed", f"{100 * chosen['gap_closed']:.0f}%{ci}"])
        elif h.more_real_gain > 0 and gap_closed(h.gain.mean, h.more_real_gain) is None:
            rows.append(["gap to those real images closed", "no gap to close (the real images gained < 0.5 pp)"])
        if "exchange_rate" in chosen:
            rate = chosen["exchange_rate"]
            worth = (f"more than {rate:.0f}" if chosen.get("exchange_rate_beyond")
                     else f"{rate:.1f} (harmful: read off the curve's first segment extended below zero)" if rate < 0
                     else f"{rate:.1f}")
            if "exchange_rate_ci_low" in chosen:
                above = "more than " if chosen.get("exchange_rate_ci_beyond") else ""
                worth += f" [{chosen['exchange_rate_ci_low']:.1f}, {above}{chosen['exchange_rate_ci_high']:.1f}]"
            rows.append(["worth this many real images per class", worth])
    if h.corpus_gain is not None:
        k = data.images_per_class
        what = ("the generator's training data, added directly" if data.corpus_words == ReportData.corpus_words
                else "fetched instead of generated")
        rows.append([f"gain of {k} {data.corpus_words} per class ({what})", f"{100 * h.corpus_gain:+.2f} pp"])
    if h.over_corpus is not None:
        rows.append([f"synthetic images against those {data.corpus_words}, paired over seeds",
                     format_gain(h.over_corpus)])
    if data.filter_metrics and "mvc" in data.filter_metrics:
        counts = data.filter_metrics["mvc"]["counts"].get("_all", {})
        if counts:
            if filter_is_on(data.filter_metrics):
                rows.append(["synthetic images kept by the filter", f"{counts['kept']} of {counts['total']}"])
            else:
                flagged = sum(n for key, n in counts.items() if key not in ("kept", "total"))
                rows.append(["synthetic images the filter flags (off: all kept)", f"{flagged} of {counts['total']}"])
    return ["", h.model], rows


SELECTION_RULE = ("How the headline is chosen: the synthetic strategy with the best mean validation accuracy; since "
                  "its validation and test scores share their seeds' luck, it claims an effect only when its p-value "
                  "stays below 0.05 after Holm's adjustment over every strategy it was chosen from.")


def strategy_table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """Rows = model x augmentation; columns = real only and each strategy with its paired gain."""
    strategies = [s for s in GRID_STRATEGIES if any(column_name(b, s) in metrics[m] for m in metrics for b in SHORT)]
    rows = []
    for model in sorted(metrics):
        for baseline in SHORT:
            present = [metrics[model].get(column_name(baseline, s)) for s in strategies]
            if any(present):
                rows.append([model, baseline] + [_gain_cell(c) for c in present])
    return ["model", "augmentation"] + list(strategies), rows


def _gain_cell(cell: dict | None) -> str:
    """mean ± std, and the paired gain with its CI when there is one."""
    if cell is None:
        return "–"
    if "gain_ci_low" not in cell:
        return _cell_text(cell)
    return (f"{_percent(cell)}; {100 * cell['gain']:+.2f} pp [{100 * cell['gain_ci_low']:+.2f}, "
            f"{100 * cell['gain_ci_high']:+.2f}], p = {cell['gain_p']:.3f}")


def paper_table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """The paper's table: rows = models; Baseline, AA, RA, TA and their +Syn columns (gain in pp)."""
    models = sorted(metrics)
    present = [c for c in PAPER_COLUMNS if any(c in metrics[m] for m in models)]
    return ["model"] + [PAPER_TITLES[c] for c in present], [[m] + [_cell_text(metrics[m].get(c)) for c in present]
                                                            for m in models]


def set_comparison_table(metrics: dict, other_set: str, other_title: str,
                         mvc_title: str) -> tuple[list[str], list[list[str]]]:
    """Real only vs combined on another synthetic set vs combined on the MVC set, with paired gains, for each
    model and augmentation that has runs on the other set."""
    rows = []
    for model in sorted(metrics):
        for baseline in SHORT:
            names = (column_name(baseline, "real"), f"{column_name(baseline, 'combined')}_{other_set}",
                     column_name(baseline, "combined"))
            if names[1] in metrics[model]:
                rows.append([model, baseline] + [_gain_cell(metrics[model].get(c)) for c in names])
    return ["model", "augmentation", "Baseline (real only)", other_title, mvc_title], rows


def ablation_table(metrics: dict, mix_steps: tuple[int, int] | None = None) -> tuple[list[str], list[list[str]]]:
    """The MVC ablation: real only vs combined with the unmixed set (P = Q = 0) vs with MVC's."""
    mvc_title = "Syn, MVC" if mix_steps is None else f"Syn, P = {mix_steps[0]}, Q = {mix_steps[1]}"
    return set_comparison_table(metrics, UNMIXED, "Syn, unmixed (P = Q = 0)", mvc_title)


def pretrained_table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """The paper's Table 4: real only vs combined with the pretrained model's images (text-to-image, the same
    mixes and seeds) vs with the fine-tuned model's."""
    return set_comparison_table(metrics, PRETRAINED, "Syn, pretrained (text-to-image)", "Syn, fine-tuned")


def budget_table(data: ReportData) -> tuple[list[str], list[list[str]]]:
    """Test accuracy (%) at each number of images added per class, synthetic and real, per model."""
    rows = []
    for model, curves in sorted(data.budget.items()):
        for kind in ("synthetic", "real", "corpus"):
            for k, mean, low, high in curves.get(kind, []):
                rows.append([model, kind, str(k), f"{100 * mean:.2f}", f"[{100 * low:.2f}, {100 * high:.2f}]"])
    return ["model", "added images", "added per class", "test accuracy (%)", "95% CI"], rows


def quality_per_class(quality: dict | None, filter_metrics: dict | None) -> tuple[list[str], list[list[str]]]:
    """Rows = classes: label fidelity, share within RMSE 0.1 of a training image, diversity real vs synthetic, kept
    after filtering."""
    if not quality:
        return [], []
    classes = sorted(k.removeprefix("fidelity.") for k in quality if k.startswith("fidelity.") and k != "fidelity._all")
    counts = (filter_metrics or {}).get("mvc", {}).get("counts", {})
    rows = []
    for label in classes:
        kept = counts.get(label)
        rows.append([label, f"{100 * quality[f'fidelity.{label}']:.0f}%",
                     f"{100 * quality.get(f'within_rmse_fraction.{label}', float('nan')):.0f}%",
                     f"{quality.get(f'diversity.real.{label}', float('nan')):.2f}",
                     f"{quality.get(f'diversity.synthetic.{label}', float('nan')):.2f}",
                     f"{kept['kept']} of {kept['total']}" if kept else "–"])
    return ["class", "label fidelity", "within RMSE 0.1", "diversity, real", "diversity, synthetic",
            "kept after filtering"], rows


def quality_summary(quality: dict | None) -> tuple[list[str], list[list[str]]]:
    """A few overall numbers: FID, KID, images within RMSE 0.1 of a training image, and whether the text condition moves the images."""
    if not quality:
        return [], []

    def number(key: str, digits: int = 3) -> str:
        value = quality.get(key)
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value or "–")

    rows = [["label fidelity (real-only classifier)", f"{100 * quality['fidelity._all']:.0f}%"],
            [f"FID to the real {quality.get('fid_compared_with', 'test')} images (classifier features)", number("fid")],
            ["KID (classifier features)", f"{number('kid_mean', 4)} ± {number('kid_std', 4)}"],
            ["within pixel RMSE 0.1 of a training image", f"{quality['memorisation.within_rmse']:.0f} "
                                                         f"({100 * quality['memorisation.within_rmse_fraction']:.0f}%)"]]
    if "fid_inception" in quality:
        rows.append(["FID (Inception-v3 features)", number("fid_inception")])
    if "condition.text_change" in quality:
        rows.append(["pixel RMSE when only the text changes (MVC mix)", number("condition.text_change")])
        rows.append(["pixel RMSE when only the conditioning image changes", number("condition.image_change")])
    return ["measure", "value"], rows


def filter_table(filter_metrics: dict | None) -> tuple[list[str], list[list[str]]]:
    """Kept and dropped synthetic images per class and reason (MVC set)."""
    counts = (filter_metrics or {}).get("mvc", {}).get("counts", {})
    if not counts:
        return [], []
    reasons = [k for k in next(iter(counts.values())) if k not in ("kept", "total")]
    rows = [[label, str(c["kept"])] + [str(c[r]) for r in reasons] + [str(c["total"])]
            for label, c in sorted(counts.items(), key=lambda item: (item[0] == "_all", item[0]))]
    rows = [["all" if row[0] == "_all" else row[0]] + row[1:] for row in rows]
    flagged = "" if filter_is_on(filter_metrics) else " (flagged, kept)"
    return ["class", "kept"] + [r.replace("_", " ") + flagged for r in reasons] + ["generated"], rows


def filter_is_on(filter_metrics: dict | None) -> bool:
    return bool((filter_metrics or {}).get("enabled", True))


def filter_titles(filter_metrics: dict | None) -> tuple[str, str]:
    """(table title, image grid title): with filter.enabled false nothing is dropped, images are flagged."""
    if filter_is_on(filter_metrics):
        return "What the filter kept and dropped", "Dropped by the filter"
    return ("What the filter flags (filter.enabled is false: every image is kept)",
            "Flagged by the filter (kept, as filter.enabled is false)")


def time_table(stage_times: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """Wall time of each stage's last run (the run that produced these results), in pipeline order, with what
    the stage did per second and on which device (mvcaug.core.throughput); a stage that never finished is left
    out."""
    finished = {stage: entry for stage, entry in stage_times.items() if "seconds" in entry}
    if not finished:
        return [], []
    rows = [[stage, f"{entry['seconds']:.1f}", describe(stage_throughput(entry)),
             entry.get("finished", "")] for stage, entry in finished.items()]
    total = sum(entry["seconds"] for entry in finished.values())
    return (["stage", "wall time (s)", "throughput (per device)", "finished (UTC)"],
            rows + [["all stages", f"{total:.1f}", "", ""]])


def runs_table(results: Sequence[RunResult]) -> tuple[list[str], list[list[str]]]:
    rows = [[r.cell.model, r.cell.baseline, result_column(r), str(r.cell.seed), str(r.best_epoch),
             f"{100 * r.val_acc:.2f}", f"{100 * r.test_acc:.2f}"] for r in results]
    return ["model", "augmentation", "column", "seed", "best epoch", "val %", "test %"], rows


# --- the sections, once, for both renderings ------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """One part of the report, the same for report.html and report.md: a heading (none for the headline
    table), a note, a table and, in the HTML only, pre-rendered markup (charts, image grids) above the table.

    The Markdown leaves out what needs a browser (html_only sections, figures) and says so at its end."""

    title: str
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""
    figure: Markup = Markup("")
    html_only: bool = False

    @property
    def in_html(self) -> bool:
        return bool(self.figure or self.rows)

    @property
    def in_markdown(self) -> bool:
        return bool(self.rows) and not self.html_only


def _section(title: str, figure: Markup = Markup(""), table: tuple[list[str], list[list[str]]] = ([], []),
             note: str = "", html_only: bool = False) -> Section:
    """A Section from a (header, rows) table, as the table functions above return them."""
    header, rows = table
    return Section(title, header, rows, note, figure, html_only)


BUDGET_NOTE = ("Test accuracy against the images added per class to the real training split: synthetic (combined "
               "cells on the first k images of each class), held-out real ones (more_real cells) and the generator's "
               "own pretraining corpus (corpus cells: its glyphs of each class, added directly; with class folders in "
               "train.retrieval_folder, retrieved real images instead); 0 is real only. "
               "Mean over seeds with the 95% CI band.")
PRETRAIN_NOTE = ("The generator's starting point: a text-to-image U-Net pretrained on a corpus that holds none of the "
                 "task's images. Self-check: a classifier trained on the corpus reads the model's own samples as the "
                 "glyph their caption asked for, beside how often it reads held-out corpus renders right; it passes "
                 "at the ratio pretrain.check_ratio.")


def pretrain_table(data: ReportData) -> tuple[list[str], list[list[str]]]:
    """The self-check against training steps and seconds, and the final verdict on it."""
    p = data.pretrain
    if not p or p.get("source") == "none":
        return [], []
    rows = [[row["step"], f"{float(row['seconds']):.0f}" if row.get("seconds") else "–",
             f"{100 * float(row['sample_accuracy']):.1f}", f"{100 * float(row['heldout_accuracy']):.1f}",
             f"{float(row['ratio']):.2f}"] for row in data.pretrain_curve]
    check = p.get("self_check")
    if check is None:  # pretrain.source folder: unlabeled images name no glyph for a checker to read
        rows.append([f"final ({p['steps']} steps, {p['images']} unlabeled images of pretrain.folder)", "", "–", "–",
                     "no self-check: an unlabeled corpus names nothing to read (see the samples grid)"])
        return ["step", "seconds of training", "samples read as asked (%)", "held-out renders read right (%)",
                "ratio"], rows
    rows.append([f"final ({p['steps']} steps, {p['images']} corpus images)", "",
                 f"{100 * check['sample_accuracy']:.1f}", f"{100 * check['heldout_accuracy']:.1f}",
                 f"{check['ratio']:.2f} ({'passed' if check['passed'] else 'not passed'}, {check['ratio_needed']} needed)"])
    return ["step", "seconds of training", "samples read as asked (%)", "held-out renders read right (%)", "ratio"], rows


def pretrain_figure(data: ReportData) -> Markup:
    """The corpus and the pretrained model's samples, one glyph per column."""
    return Markup("").join(Markup("<figure>{}<figcaption>{}</figcaption></figure>").format(_img(image, 3, caption), caption)
                           for caption, image in data.pretrain_grids)
QUALITY_NOTE = ("Label fidelity: share the real-only classifier assigns to the intended class. Within RMSE 0.1: "
                "synthetic images within pixel RMSE 0.1 of a training image (not the filter's near copies). "
                "Diversity: mean pairwise feature distance within the class.")
TIME_NOTE = ("Wall time of each stage's last run (its imports and Prefect start-up included); the report's own "
             "time is not in it yet. Throughput: the work a stage did in that run per second of one device's busy "
             "time (training samples, the loop's checkpoints and sample checks included; generated images; classifier "
             "cells and epochs); work kept from an earlier run is not counted. A larger run takes about units wanted "
             "/ rate / devices.")
NO_VERDICT = "No synthetic runs to judge: only real-only cells ran."


def verdict(data: ReportData) -> str:
    return data.headline.sentence if data.headline else NO_VERDICT


def sections(data: ReportData) -> list[Section]:
    """Every part of the report after the verdict, in reading order: the one list both renderings show, so
    their titles, notes and tables cannot drift apart. Empty sections are kept; each rendering skips them."""
    table_title, grid_title = filter_titles(data.filter_metrics)
    intro = f"{data.coverage} {SELECTION_RULE}".strip() if data.headline else ""
    return [
        _section("", table=headline_table(data), note=intro),
        _section("How many images: synthetic vs real", budget_chart(data), budget_table(data), BUDGET_NOTE),
        _section("Training strategies: real only, combined, RSP, two-phase", table=strategy_table(data.metrics),
                 note=GAIN_NOTE),
        _section("Test accuracy (%) as in the paper (gain over the matching baseline)", table=paper_table(data.metrics)),
        _section("MVC ablation: unmixed (P = Q = 0) vs MVC", table=ablation_table(data.metrics, data.mix_steps),
                 note=ABLATION_NOTE),
        _section("Pretrained vs fine-tuned generator (the paper's Table 4)", table=pretrained_table(data.metrics),
                 note=PRETRAINED_NOTE),
        _section("The pretrained generator and its self-check", pretrain_figure(data), pretrain_table(data),
                 PRETRAIN_NOTE),
        _section("Quality of the synthetic images, per class",
                 table=quality_per_class(data.quality, data.filter_metrics), note=QUALITY_NOTE),
        _section("Quality summary", table=quality_summary(data.quality)),
        _section(table_title, table=filter_table(data.filter_metrics)),
        _section("Where the time went", table=time_table(data.stage_times), note=TIME_NOTE),
        _section("Real vs synthetic, per class", sample_grid(data.samples), html_only=True),
        _section(grid_title, dropped_grid(data.dropped), html_only=True),
        _section("Classifier validation accuracy per epoch (mean over seeds)", validation_charts(data.curves),
                 html_only=True),
        _section("Denoiser fine-tuning loss", loss_chart(data.losses), html_only=True),
        _section("Runs", table=runs_table(data.results), html_only=True),
    ]


# --- HTML-only markup: charts and image grids, built here and marked safe here ----------------------------


def _data_uri(image: Image.Image, scale: int) -> str:
    buffer = io.BytesIO()
    image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _img(image: Image.Image, scale: int, title: str = "") -> Markup:
    return Markup('<img src="{}" title="{}" alt="{}">').format(_data_uri(image, scale), title, title)


def budget_chart(data: ReportData) -> Markup:
    """Test accuracy (%) against images added per class: synthetic and real, mean with the 95% CI band."""
    charts = []
    for model, curves in sorted(data.budget.items()):
        series = [Series(data.corpus_words if kind == "corpus" else f"{kind} images", colour, [(k, 100 * m, 100 * lo, 100 * hi) for k, m, lo, hi in points])
                  for (kind, colour) in (("synthetic", COLOURS[0]), ("real", COLOURS[1]), ("corpus", COLOURS[2]))
                  if (points := curves.get(kind))]
        if series:
            charts.append(line_chart(series, "images added per class", "test accuracy (%)", title=model))
    return Markup("".join(charts))  # line_chart escapes its own text


def validation_charts(curves: dict[str, dict[str, list[float]]]) -> Markup:
    charts = []
    for model, by_column in sorted(curves.items()):
        series = [Series(name, colour, indexed(values)) for (name, values), colour
                  in zip(sorted((n, v) for n, v in by_column.items() if len(v) > 1), COLOURS * 8)]
        if series:
            charts.append(line_chart(series, "epoch", "validation accuracy", title=model))
    return Markup("".join(charts))


def loss_chart(losses: Sequence[float]) -> Markup:
    if len(losses) < 2:
        return Markup("")
    smooth = running_mean(losses, len(losses) // 50 + 1)
    return (Markup(line_chart([Series("loss (running mean)", COLOURS[0], indexed(smooth))], "step", "loss"))
            + Markup("<p>loss from {:.3f} to {:.3f} over {} steps</p>").format(smooth[0], smooth[-1], len(losses)))


def sample_grid(samples: Sequence[SampleRow]) -> Markup:
    if not samples:
        return Markup("")
    rows = []
    for row in samples:
        real = Markup("").join(_img(im, 4, f"real {row.label}") for im in row.real)
        synth = Markup("").join(Markup('<span class="pair">{}{}</span>').format(
            _img(c, 2, "conditioning image"), _img(s, 4, f"synthetic {row.label}"))
            for s, c in zip(row.synthetic, row.conditioning))
        rows.append(Markup("<tr><th>{}</th><td>{}</td><td>{}</td></tr>").format(row.label, real, synth))
    return Markup("<p>Each synthetic image (large) follows its conditioning image (small, shaded).</p>"
                  "<table><tr><th>class</th><th>real</th><th>synthetic</th></tr>{}</table>").format(Markup("").join(rows))


def dropped_grid(dropped: Sequence[DroppedImage]) -> Markup:
    if not dropped:
        return Markup("")
    tiles = Markup("").join(
        Markup("<figure>{}<figcaption>{}<br>{}</figcaption></figure>").format(
            _img(d.image, 4, f"{d.label}: {d.reason}"), d.label, d.reason.replace("_", " "))
        for d in dropped)
    return Markup('<div class="tiles">{}</div>').format(tiles)


# --- the two renderings: templates/report.html.j2 and templates/report.md.j2 -------------------------------


TEMPLATES = Path(__file__).with_name("templates")
"""The report's jinja2 templates, beside this module (package data, so an installed mvcaug has them too)."""
_TEMPLATES = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False, default=False),
    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
)


def _render(template: str, data: ReportData) -> str:
    return _TEMPLATES.get_template(template).render(title=data.title, verdict=verdict(data), sections=sections(data),
                                                     files=FILES)


def render_html(data: ReportData) -> str:
    """One HTML file, images inline, readable offline, the answer first. Text is escaped by the template
    (autoescape); charts and image grids arrive as Markup, built and escaped in this module."""
    return _render("report.html.j2", data)


def render_markdown(data: ReportData) -> str:
    """The report without images, for report.md and the Prefect artifact: the verdict first, then the same
    sections as the HTML, less the ones that need a browser."""
    return _render("report.md.j2", data)


def mean_validation_curves(results: Sequence[RunResult], logs: dict[str, list[float]]) -> dict[str, dict[str, list[float]]]:
    """{model: {grid column: validation accuracy per epoch, averaged over seeds}} from the cells' logs
    ({cell name: values}); a column's curve is as long as its shortest log."""
    per_column: dict[tuple[str, str], list[list[float]]] = {}
    for r in results:
        if r.cell.name in logs:
            per_column.setdefault((r.cell.model, result_column(r)), []).append(logs[r.cell.name])
    curves: dict[str, dict[str, list[float]]] = {}
    for (model, column), runs in per_column.items():
        length = min(len(v) for v in runs)
        curves.setdefault(model, {})[column] = [sum(v[i] for v in runs) / len(runs) for i in range(length)]
    return curves
