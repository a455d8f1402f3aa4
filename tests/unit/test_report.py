"""The metrics summary and the HTML / Markdown report."""

from __future__ import annotations

import base64
import io
import math
import re

from PIL import Image

from mvcaug.report import SampleRow, ablation_table, metrics_markdown, render_html, summarise
from mvcaug.cells import Cell, RunResult


def run(model: str, baseline: str, strategy: str, seed: int, epoch: int, val: float, test: float,
        synthetic_set: str = "mvc") -> RunResult:
    return RunResult(Cell(model, baseline, strategy, seed, synthetic_set), epoch, val, test)


def results() -> list[RunResult]:
    return [
        run("small_cnn", "default", "real", 0, 3, 0.55, 0.5),
        run("small_cnn", "default", "real", 1, 4, 0.65, 0.7),
        run("small_cnn", "default", "combined", 0, 5, 0.8, 0.8),
        run("small_cnn", "default", "combined", 1, 6, 0.9, 0.9),
        run("small_cnn", "default", "combined", 2, 7, 1.0, 1.0),
    ]


def test_summarise_means_stds_and_gain():
    metrics = summarise(results())["small_cnn"]
    assert metrics["baseline"] == {"acc_mean": 0.6, "acc_std": round(math.sqrt(0.02), 4), "val_acc_mean": 0.6,
                                   "runs": 2}
    assert metrics["syn"] == {"acc_mean": 0.9, "acc_std": 0.1, "val_acc_mean": 0.9, "runs": 3, "gain": 0.3}
    assert set(metrics) == {"baseline", "syn"}


def test_summarise_paper_columns():
    runs = [run("m", b, s, 0, 1, 0.5, acc) for b, s, acc in
            [("default", "real", 0.5), ("randaugment", "real", 0.6), ("randaugment", "combined", 0.75),
             ("autoaugment", "two_phase", 0.4)]]
    metrics = summarise(runs)["m"]
    assert set(metrics) == {"baseline", "ra", "ra_syn", "aa_two_phase"}
    assert metrics["ra_syn"]["gain"] == 0.15
    assert "gain" not in metrics["aa_two_phase"]  # no AA real-only run to compare with


def test_render_html_has_the_tables_and_inline_images():
    metrics = summarise(results())
    real = [Image.new("L", (8, 8), 40), Image.new("L", (8, 8), 200)]
    synthetic = [Image.new("L", (8, 8), 90)]
    conditioning = [Image.new("L", (8, 8), 10)]
    samples = [SampleRow("zero", real, synthetic, conditioning),
               SampleRow("<one>", real[:1], synthetic, conditioning)]
    page = render_html(metrics, results(), samples, [1.0, 0.8, 0.5, 0.4], {"fid": 1.5}, title="tiny & test")
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<title>tiny &amp; test</title>" in page
    assert "<th>Baseline</th><th>Syn</th>" in page
    assert "<td>small_cnn</td><td>60.00 ± 14.14</td><td>90.00 ± 10.00 (+30.00)</td>" in page
    assert "<td>fid</td><td>1.5000</td>" in page
    assert "&lt;one&gt;" in page and "<one>" not in page
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == (2 + 2) + (1 + 2)  # per row: real images, then (conditioning, synthetic) pairs
    decoded = [Image.open(io.BytesIO(base64.b64decode(u))) for u in uris]
    assert decoded[0].size == (32, 32)  # real images at 4x
    assert decoded[0].getpixel((0, 0)) == 40
    assert {im.size for im in decoded} == {(32, 32), (16, 16)}  # conditioning images at 2x
    assert "<svg" in page and "over 4 steps" in page
    markdown = metrics_markdown(metrics)
    assert "| small_cnn | 60.00 ± 14.14 | 90.00 ± 10.00 (+30.00) |" in markdown
    assert "Quality" not in markdown
    with_quality = metrics_markdown(metrics, quality={"fid": 1.5, "fid_inception": "not computed: no weights"})
    assert "| fid | 1.5000 |" in with_quality and "| fid_inception | not computed: no weights |" in with_quality


def test_render_html_without_synthetic_runs_or_losses():
    metrics = summarise(results()[:2])
    page = render_html(metrics, results()[:2], [], [])
    assert "(+" not in page and "<svg" not in page
    assert "data:image/png" not in page


def test_render_html_quality_table_takes_text_values():
    page = render_html(summarise(results()), results(), [], [], {"feature_model": "small_cnn", "fid": 2.0})
    assert "<td>feature_model</td><td>small_cnn</td>" in page and "<td>fid</td><td>2.0000</td>" in page


def test_report_draws_one_validation_curve_per_grid_column():
    curves = {"small_cnn": {"baseline": [0.1, 0.5, 0.8], "syn": [0.2, 0.6, 0.9], "rsp": [0.3]}}
    page = render_html(summarise(results()), results(), [], [], curves=curves)
    assert page.count("<polyline") == 2  # a one-epoch curve has nothing to draw
    assert "&#9632; baseline" in page and "&#9632; syn" in page and "from 0.100 to 0.900" in page


def ablation_results() -> list[RunResult]:
    """Two seeds of real only, combined on the MVC set and combined on the P = Q = 0 set."""
    return results()[:2] + [
        run("small_cnn", "default", "combined", 0, 5, 0.8, 0.8),
        run("small_cnn", "default", "combined", 1, 6, 0.9, 0.9),
        run("small_cnn", "default", "combined", 0, 5, 0.7, 0.6, "no_mvc"),
        run("small_cnn", "default", "combined", 1, 6, 0.7, 0.8, "no_mvc"),
    ]


def test_report_has_the_mvc_ablation_table():
    metrics = summarise(ablation_results())
    assert set(metrics["small_cnn"]) == {"baseline", "syn", "syn_no_mvc"}  # flat keys: small_cnn.syn_no_mvc.acc_mean
    assert metrics["small_cnn"]["syn_no_mvc"] == {"acc_mean": 0.7, "acc_std": round(math.sqrt(0.02), 4),
                                                  "val_acc_mean": 0.7, "runs": 2, "gain": 0.1}
    assert metrics["small_cnn"]["syn"]["acc_mean"] == 0.85  # the MVC runs are not pooled with the ablation's
    header, rows = ablation_table(metrics, (1, 8))
    assert header == ["model", "augmentation", "Baseline (real only)", "Syn, P = Q = 0", "Syn, P = 1, Q = 8"]
    assert rows == [["small_cnn", "default", "60.00 ± 14.14", "70.00 ± 14.14 (+10.00)", "85.00 ± 7.07 (+25.00)"]]
    page = render_html(metrics, ablation_results(), [], [], mix_steps=(1, 8))
    assert "MVC ablation" in page and "<th>Syn, P = Q = 0</th><th>Syn, P = 1, Q = 8</th>" in page
    assert "<td>small_cnn</td><td>default</td><td>60.00 ± 14.14</td><td>70.00 ± 14.14 (+10.00)</td>" in page
    assert "<td>combined (P = Q = 0)</td><td>1</td>" in page  # the runs table tells the sets apart
    assert "<th>Baseline</th><th>Syn</th></tr><tr><td>small_cnn</td><td>60.00 ± 14.14</td><td>85.00" in page
    markdown = metrics_markdown(metrics, (1, 8))
    assert "| small_cnn | default | 60.00 ± 14.14 | 70.00 ± 14.14 (+10.00) | 85.00 ± 7.07 (+25.00) |" in markdown
    # without ablation runs there is no ablation table
    plain = summarise(results())
    assert "MVC ablation" not in render_html(plain, results(), [], []) + metrics_markdown(plain)
    assert ablation_table(plain) == (
        ["model", "augmentation", "Baseline (real only)", "Syn, P = Q = 0", "Syn, MVC"], [])
