"""The report: the verdict first, the tables a person reads, images inline, Markdown without images."""

from __future__ import annotations

import base64
import html
import io
import re
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from mvcaug.judging.cells import Cell, RunResult
from mvcaug.reporting.report import (
    DroppedImage, ReportData, SampleRow, ablation_table, mean_validation_curves, pick_dropped, pick_samples,
    pretrained_table, quality_per_class, render_html, render_markdown, strategy_table, time_table,
)
from mvcaug.judging.summary import bootstrap_intervals, budget_curves, headline, interval_coverage, summarise


def run(strategy: str, seed: int, test: float, val: float = 0.5, synthetic_set: str = "mvc", added_per_class: int = 0,
        baseline: str = "default") -> RunResult:
    return RunResult(Cell("small_cnn", baseline, strategy, seed, synthetic_set, added_per_class), seed + 1, val, test)


def results() -> list[RunResult]:
    out = [run("real", s, acc, 0.80) for s, acc in enumerate((0.80, 0.82, 0.84))]
    out += [run("combined", s, acc, 0.86) for s, acc in enumerate((0.83, 0.85, 0.88))]
    out += [run("combined", s, acc, 0.70, synthetic_set="unmixed") for s, acc in enumerate((0.79, 0.82, 0.85))]
    out += [run("more_real", s, acc + 0.04, added_per_class=4) for s, acc in enumerate((0.80, 0.82, 0.84))]
    return out


QUALITY = {"fidelity.<one>": 0.5, "fidelity.zero": 1.0, "fidelity._all": 0.75, "fid": 1.5, "kid_mean": 0.01,
           "kid_std": 0.002, "memorisation.within_rmse": 3.0, "memorisation.within_rmse_fraction": 0.375,
           "within_rmse_fraction.<one>": 0.25, "within_rmse_fraction.zero": 0.5, "diversity.real.zero": 2.0,
           "diversity.synthetic.zero": 1.5, "diversity.real.<one>": 2.2, "diversity.synthetic.<one>": 1.1,
           "condition.text_change": 0.05, "condition.image_change": 0.4, "fid_inception": "not computed: no weights"}
FILTER = {"mvc": {"counts": {"zero": {"kept": 3, "low_confidence": 0, "near_copy": 1, "near_duplicate": 0, "total": 4},
                             "<one>": {"kept": 2, "low_confidence": 1, "near_copy": 1, "near_duplicate": 0, "total": 4},
                             "_all": {"kept": 5, "low_confidence": 1, "near_copy": 2, "near_duplicate": 0, "total": 8}}}}


def data(**changes) -> ReportData:
    rs = results()
    real = [Image.new("L", (8, 8), 40), Image.new("L", (8, 8), 200)]
    base = ReportData(
        metrics=summarise(rs, images_per_class=4), results=rs, headline=headline(rs, 4), budget=budget_curves(rs, 4),
        quality=QUALITY, filter_metrics=FILTER, stage_times={"prepare": {"seconds": 2.5, "finished": "t1"},
                                                             "train": {"seconds": 60.25, "finished": "t2", "throughput": [
                                                                 {"what": "classifier cells", "count": 2, "seconds": 40.0,
                                                                  "device": "cpu"},
                                                                 {"what": "classifier cells", "count": 1, "seconds": 20.0,
                                                                  "device": "cpu"}]},
                                                             "generate": {"throughput": []}},
        samples=[SampleRow("zero", real, [Image.new("L", (8, 8), 90)], [Image.new("L", (8, 8), 10)]),
                 SampleRow("<one>", real[:1], [Image.new("L", (8, 8), 90)], [Image.new("L", (8, 8), 10)])],
        dropped=[DroppedImage("zero", "near_copy", Image.new("L", (8, 8), 7))],
        losses=[1.0, 0.8, 0.5, 0.4], curves={"small_cnn": {"baseline": [0.1, 0.5], "syn": [0.2, 0.6]}},
        mix_steps=(1, 8), images_per_class=4, title="tiny & test")
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_the_report_opens_with_the_verdict_and_its_numbers():
    page = render_html(data())
    body = page.split("<body>")[1]
    assert body.index('<p class="verdict">') < body.index("<h2>")  # the answer before any section
    verdict = re.search(r'<p class="verdict">(.*?)</p>', page).group(1)
    assert verdict.startswith("Synthetic images (combined, chosen on validation) raised test accuracy by +3.3 pp")
    assert "closing 83% of the gap to 4 extra real images per class" in verdict
    assert "<td>synthetic images kept by the filter</td><td>5 of 8</td>" in page
    markdown = render_markdown(data())
    assert markdown.splitlines()[2] == f"**{verdict}**"


def test_tables_carry_paired_gains_with_intervals():
    header, rows = strategy_table(summarise(results(), 4))
    assert header == ["model", "augmentation", "real", "combined"]
    assert rows[0][3].startswith("85.33 ± 2.52; +3.33 pp [") and "p = " in rows[0][3]
    header, rows = ablation_table(summarise(results(), 4), (1, 8))
    assert header[-2:] == ["Syn, unmixed (P = Q = 0)", "Syn, P = 1, Q = 8"] and rows[0][3].startswith("82.00 ± 3.00; +0.00 pp")


def test_quality_per_class_and_the_summary_are_readable_tables():
    header, rows = quality_per_class(QUALITY, FILTER)
    assert header == ["class", "label fidelity", "within RMSE 0.1", "diversity, real", "diversity, synthetic",
                      "kept after filtering"]
    assert rows == [["<one>", "50%", "25%", "2.20", "1.10", "2 of 4"], ["zero", "100%", "50%", "2.00", "1.50", "3 of 4"]]
    page = render_html(data())
    assert "<td>within pixel RMSE 0.1 of a training image</td><td>3 (38%)</td>" in page
    assert "<td>FID (Inception-v3 features)</td><td>not computed: no weights</td>" in page
    assert "pixel RMSE when only the text changes (MVC mix)</td><td>0.050</td>" in page
    assert "diversity.real.zero" not in page  # no raw metric names in the tables


def test_table_4_compares_the_pretrained_and_the_fine_tuned_generator():
    rs = results() + [run("combined", s, acc, 0.6, synthetic_set="pretrained") for s, acc in enumerate((0.7, 0.73, 0.73))]
    header, rows = pretrained_table(summarise(rs, 4))
    assert header[2:] == ["Baseline (real only)", "Syn, pretrained (text-to-image)", "Syn, fine-tuned"]
    assert rows[0][3].startswith("72.00 ± 1.73; -10.00 pp") and rows[0][4].startswith("85.33 ± 2.52; +3.33 pp")
    assert "Table 4" in render_html(data(metrics=summarise(rs, 4), results=rs))
    assert pretrained_table(summarise(results(), 4))[1] == []  # without the pretrained set: no table
    assert "Table 4" not in render_html(data())


def test_where_the_time_went_and_what_the_filter_dropped():
    header, rows = time_table(data().stage_times)
    assert header == ["stage", "wall time (s)", "throughput (per device)", "finished (UTC)"]
    # the train stage's two workers' cells add up (3 cells in 60 busy seconds); generate never finished: left out
    assert rows == [["prepare", "2.5", "", "t1"], ["train", "60.2", "3 classifier cells/min on cpu (3 in 60 s)", "t2"],
                    ["all stages", "62.8", "", ""]]
    page = render_html(data())
    assert "<h2>Where the time went</h2>" in page and "<h2>What the filter kept and dropped</h2>" in page
    assert "<td>all</td><td>5</td><td>1</td><td>2</td><td>0</td><td>8</td>" in page
    assert "<figcaption>zero<br>near copy</figcaption>" in page


def test_a_switched_off_filter_is_reported_as_flagging_not_dropping():
    counts = {"kept": 8, "low_confidence": 1, "near_copy": 2, "near_duplicate": 0, "total": 8}
    off = {"mvc": {"counts": {"zero": counts, "_all": counts}}, "enabled": False}
    page = render_html(data(filter_metrics=off))
    assert "<h2>What the filter flags (filter.enabled is false: every image is kept)</h2>" in page
    assert "<th>near copy (flagged, kept)</th>" in page and "Dropped by the filter" not in page
    assert "<td>synthetic images the filter flags (off: all kept)</td><td>3 of 8</td>" in page


def test_images_are_inline_escaped_and_the_page_works_offline():
    page = render_html(data())
    assert "<title>tiny &amp; test</title>" in page and "&lt;one&gt;" in page and "<one>" not in page
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == (2 + 2) + (1 + 2) + 1  # real images, (conditioning, synthetic) pairs, one dropped image
    decoded = [Image.open(io.BytesIO(base64.b64decode(u))) for u in uris]
    assert decoded[0].size == (32, 32) and decoded[0].getpixel((0, 0)) == 40
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    for svg in re.findall(r"<svg.*?</svg>", page, flags=re.S):
        ET.fromstring(svg)  # every chart is well-formed
    assert page.count("<svg") == 3  # the budget curve, validation curves, fine-tuning loss


def test_without_synthetic_runs_the_report_says_so_and_draws_no_gains():
    real_only = [r for r in results() if r.cell.strategy == "real"]
    page = render_html(data(metrics=summarise(real_only, 4), results=real_only, headline=None, budget={},
                            quality=None, filter_metrics=None, samples=[], dropped=[], losses=[], curves={}))
    assert "No synthetic runs to judge" in page and " pp" not in page and "<svg" not in page
    assert "data:image/png" not in page


def test_mean_validation_curves_average_the_seeds_of_a_column():
    logs = {"small_cnn-default-real-seed0": [0.1, 0.3], "small_cnn-default-real-seed1": [0.3, 0.5, 0.9]}
    assert mean_validation_curves(results(), logs) == {"small_cnn": {"baseline": [0.2, 0.4]}}


def test_the_verdict_says_what_its_intervals_cover_and_how_the_headline_was_chosen():
    rs = results()
    correct = {r.cell.name: np.repeat([1.0, 0.0], [round(r.test_acc * 50), 50 - round(r.test_acc * 50)]) for r in rs}
    metrics = summarise(rs, images_per_class=4)
    for column, intervals in bootstrap_intervals(rs, correct, 4, draws=300)["small_cnn"].items():
        metrics["small_cnn"][column].update(intervals)
    coverage = interval_coverage(3, 50, clustered=False)
    assert coverage.startswith("What the intervals cover: the t-interval, the 3 classifier seeds (paired); "
                               "the bootstrap interval, those seeds and the 50 test images")
    assert "one generator" in coverage
    many = interval_coverage(5, 1347, clustered=True, generators=3)
    assert many.startswith("What the intervals cover: the t-interval, 3 generators (fine-tuning, mixing and generation "
                           "repeated with other seeds) with the 5 classifier seeds paired and nested in each; the "
                           "bootstrap interval, those generators, seeds and the 1347 test images (clusters of test")
    assert "one generator" not in many and "are for the main run's generator" in many
    page, markdown = (render(data(metrics=metrics, coverage=coverage)) for render in (render_html, render_markdown))
    for text in (page, markdown):
        assert "What the intervals cover" in text and "after Holm" in text
        assert "gain, bootstrap over seeds and test images" in text
    assert page.index("What the intervals cover") < page.index("<h2>")  # under the verdict, before any section


HTML_ONLY = ["Real vs synthetic, per class", "Dropped by the filter",
             "Classifier validation accuracy per epoch (mean over seeds)", "Denoiser fine-tuning loss", "Runs"]
"""The parts that need a browser (image grids, charts, every run): the Markdown points to report.html for them."""


def test_the_markdown_report_has_the_html_report_s_sections_under_the_same_titles():
    rs = results() + [run("combined", s, acc, 0.6, synthetic_set="pretrained") for s, acc in enumerate((0.7, 0.73, 0.73))]
    report = data(metrics=summarise(rs, 4), results=rs)
    page, markdown = render_html(report), render_markdown(report)
    html_titles = [html.unescape(t) for t in re.findall(r"<h2>(.*?)</h2>", page)]
    markdown_titles = re.findall(r"^## (.*)$", markdown, flags=re.M)
    assert set(HTML_ONLY) <= set(html_titles) and len(html_titles) == 14  # every section has content here
    assert markdown_titles == [t for t in html_titles if t not in HTML_ONLY]  # same titles, same order
    assert markdown.rstrip().endswith("report.html, beside this file.")


def test_a_label_with_html_special_characters_is_escaped_exactly_once():
    label = "<b>cat & \"dog\"</b>"
    image = Image.new("L", (8, 8), 90)
    report = data(samples=[SampleRow(label, [image], [image], [image])],
                  dropped=[DroppedImage(label, "near_copy", image)], title=label,
                  quality={**QUALITY, f"fidelity.{label}": 0.37},
                  stage_times={label: {"seconds": 1.0, "finished": "t"}})
    page = render_html(report)
    assert "<b>" not in page  # escaped at least once
    assert "&amp;amp;" not in page and "&amp;lt;" not in page  # and not twice
    shown = {where: re.findall(pattern, page) for where, pattern in {
        "title": r'<meta charset="utf-8"><title>(.*?)</title>', "h1": r"<h1>(.*?)</h1>",
        "sample grid row": r"<tr><th>([^<]*)</th><td><img",  # markup built in mvcaug.reporting.report
        "dropped caption": r"<figcaption>([^<]*)<br>",
        "image titles": r'title="([^"]*)"',
        "quality table": r"<tr><td>([^<]*)</td><td>37%</td>",  # the template's tables
        "time table": r"<tr><td>([^<]*)</td><td>1.0</td><td></td><td>t</td>"}.items()}
    decoded = {where: [html.unescape(text) for text in found] for where, found in shown.items()}
    assert all(decoded[where] == [label] for where in ("title", "h1", "sample grid row", "dropped caption",
                                                       "quality table", "time table")), decoded
    assert {f"real {label}", f"synthetic {label}", f"{label}: near_copy"} <= set(decoded["image titles"])
    assert f"# {label}" in render_markdown(report)  # Markdown is not HTML: no escaping there


PRETRAIN = {"source": "glyphs", "images": 4800, "glyphs": 16, "steps": 700, "loss_last": 0.07,
            "self_check": {"sample_accuracy": 0.9, "heldout_accuracy": 0.98, "ratio": 0.9184, "ratio_needed": 0.9,
                           "passed": True}}


def test_the_pretrained_generator_shows_its_self_check_curve_and_grids():
    curve = [{"step": "350", "seconds": "110.0", "sample_accuracy": "0.6", "heldout_accuracy": "0.98", "ratio": "0.6122"},
             {"step": "700", "seconds": "221.5", "sample_accuracy": "0.9", "heldout_accuracy": "0.98", "ratio": "0.9184"}]
    grids = [("the corpus", Image.new("L", (32, 16), 255)), ("the samples", Image.new("L", (32, 16), 0))]
    page = render_html(data(pretrain=PRETRAIN, pretrain_curve=curve, pretrain_grids=grids))
    start = page.index("The pretrained generator and its self-check")
    section = page[start : page.index("<h2>", start)]
    assert "<td>350</td><td>110</td><td>60.0</td><td>98.0</td><td>0.61</td>" in section
    assert "0.92 (passed, 0.9 needed)" in section and section.count("<figure><img") == 2
    markdown = render_markdown(data(pretrain=PRETRAIN, pretrain_curve=curve, pretrain_grids=grids))
    assert "| 700 | 222 | 90.0 | 98.0 | 0.92 |" in markdown
    # without the run's record of seconds (a checkout from DVC's cache) the column says so
    untimed = [{**row, "seconds": ""} for row in curve]
    assert "| 350 | – | 60.0 |" in render_markdown(data(pretrain=PRETRAIN, pretrain_curve=untimed))
    # no pretraining (pretrain.source: none, or no stage output): no section
    for empty in ({"source": "none"}, None):
        assert "self-check" not in render_html(data(pretrain=empty))


def digit_decisions(manifest_rows: list[dict]) -> list[dict]:
    """Decision rows as the filter writes them for synthetic images of the digits' classes: per class, three images
    conditioned on the class's training images, the second dropped as a near-copy of its conditioning image."""
    train = [row for row in manifest_rows if row["split"] == "train"]
    decisions = []
    for label in sorted({row["label"] for row in train}, reverse=True):  # not in class order
        conds = [row["id"] for row in train if row["label"] == label]
        for i in range(3):
            reason = "near_copy" if i == 1 else ""
            decisions.append({"path": f"shard-{label}-0/{i:04d}.png", "label": label, "cond_id": conds[i],
                              "kept": not reason, "reason": reason})
    return decisions


def test_pick_samples_takes_each_class_s_first_training_images_and_first_kept_synthetic_ones(digits_prepared):
    _, manifest = digits_prepared
    rows = manifest.to_pylist()
    picks = pick_samples(rows, digit_decisions(rows), per_class=2)
    assert [pick.label for pick in picks] == sorted({row["label"] for row in rows})
    for pick in picks:
        own = [row for row in rows if row["split"] == "train" and row["label"] == pick.label]
        assert pick.real == own[:2]  # the manifest's order, training images only (6 per class: the first 2)
        assert [s["path"] for s in pick.synthetic] == [f"shard-{pick.label}-0/0000.png", f"shard-{pick.label}-0/0002.png"]
        assert all(s["kept"] and s["cond_id"] in {row["id"] for row in own} for s in pick.synthetic)
    assert pick_samples(rows, [], per_class=3)[0].synthetic == []


def test_pick_dropped_takes_the_reasons_in_turn_then_the_rest_in_order():
    reasons = ["near_copy"] * 4 + ["", "low_confidence", "near_copy", "near_duplicate", "low_confidence"]
    decisions = [{"path": f"{i}.png", "label": "seven", "kept": not reason, "reason": reason}
                 for i, reason in enumerate(reasons)]
    shown = [row["path"] for row in pick_dropped(decisions)]
    # one of each reason while all three have one (near_duplicate has one), then the rest as they came
    assert shown == ["0.png", "5.png", "7.png", "1.png", "2.png", "3.png", "6.png", "8.png"]
    assert [row["path"] for row in pick_dropped(decisions, limit=4)] == shown[:4]
    assert pick_dropped([row for row in decisions if not row["reason"]]) == []
