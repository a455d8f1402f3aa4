"""Classifier training on a tiny real split, the metrics summary and the HTML report."""

from __future__ import annotations

import base64
import io
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mvcaug.images import ImageSet, load_split, to_image, to_tensor
from mvcaug.params import ModelSettings, TrainParams
from mvcaug.prepare import DIGIT_NAMES
from mvcaug.report import SampleRow, ablation_table, metrics_markdown, render_html, summarise
from mvcaug.train import Cell, RunResult, TrainingData, cell_fingerprint, plan_cells, train_cell


@pytest.fixture(scope="module")
def splits(digits_prepared):
    folder, _ = digits_prepared
    return tuple(load_split(folder, split, channels=1) for split in ("train", "val", "test"))


def test_load_split_reads_the_manifest(digits_prepared, splits):
    _, manifest = digits_prepared
    train, val, test = splits
    assert train.pixels.shape == (60, 1, 16, 16)
    assert val.pixels.shape == (40, 1, 16, 16) and test.pixels.shape == (40, 1, 16, 16)
    assert train.pixels.min() >= -1 and train.pixels.max() <= 1
    rows = [r for r in manifest.to_pylist() if r["split"] == "train"]
    assert train.ids == [r["id"] for r in rows] and train.sha256 == [r["sha256"] for r in rows]
    assert len(train.of_class("three")) == 6
    # tensor <-> image is lossless at the stored resolution
    image = Image.open(digits_prepared[0] / rows[0]["path"])
    assert np.array_equal(np.asarray(to_image(to_tensor(image, 1))), np.asarray(image))


def tiny_grid(**changes) -> TrainParams:
    settings = {"small_cnn": ModelSettings(epochs=2, batch_size=16, width=4)}
    return replace(TrainParams(model_settings=settings, seeds=(3,)), **changes)


def test_train_cell_on_a_tiny_split(splits):
    train, val, test = splits
    epochs = []
    data = TrainingData(train, None, val, test, list(DIGIT_NAMES))
    result = train_cell(Cell("small_cnn", "default", "real", 3), data, tiny_grid(),
                        on_epoch=lambda epoch, logs: epochs.append((epoch, logs)))
    assert isinstance(result, RunResult)
    assert (result.model, result.baseline, result.strategy, result.seed) == ("small_cnn", "default", "real", 3)
    assert 0.0 <= result.val_acc <= 1.0 and 0.0 <= result.test_acc <= 1.0
    # accuracies are counts over 40 images
    assert math.isclose(result.test_acc * 40, round(result.test_acc * 40))
    assert [e for e, _ in epochs] == [0, 1]
    assert all(math.isfinite(logs["train_loss"]) and logs["train_loss"] > 0 for _, logs in epochs)
    # the kept epoch is the best validation epoch (the first one on a tie)
    vals = [logs["val_acc"] for _, logs in epochs]
    assert result.val_acc == max(vals)
    assert result.best_epoch == vals.index(max(vals))


def test_two_phase_ends_with_real_only_epochs_at_lower_lr(splits):
    train, val, test = splits
    synthetic = ImageSet([f"s{i}" for i in range(20)], list(DIGIT_NAMES) * 2, [""] * 20, train.pixels[:20].flip(-1))
    data = TrainingData(train, synthetic, val, test, list(DIGIT_NAMES))
    logs = []
    grid = tiny_grid(phase2_epochs=1, phase2_lr_factor=0.1)
    result = train_cell(Cell("small_cnn", "default", "two_phase", 0), data, grid, lambda e, v: logs.append(v["lr"]))
    assert logs == [0.002, 0.002, 0.002 * 0.1]
    assert result.best_epoch == 2  # selected among phase 2's epochs only: the model has seen phase 2
    rsp = train_cell(Cell("small_cnn", "default", "rsp", 0), data, grid)
    assert 0.0 <= rsp.test_acc <= 1.0
    with pytest.raises(ValueError, match="synthetic"):
        train_cell(Cell("small_cnn", "default", "combined", 0), TrainingData(train, None, val, test, list(DIGIT_NAMES)),
                   grid)


def test_grid_cells_and_fingerprints():
    grid = tiny_grid(seeds=(0, 1), strategies=("real", "combined"),
                     model_settings={"small_cnn": ModelSettings(), "wrn28_2": ModelSettings()}, models=("small_cnn", "wrn28_2"))
    cells = plan_cells(grid)
    assert len(cells) == 2 * 1 * 2 * 2 and len({c.name for c in cells}) == len(cells)
    assert len(plan_cells(replace(grid, full_grid=True))) == 2 * 4 * 4 * 2
    real, combined = Cell("small_cnn", "default", "real", 0), Cell("small_cnn", "default", "combined", 0)
    synthetic, other = {"mvc": "synthetic"}, {"mvc": "other synthetic"}
    base = cell_fingerprint(real, grid, "data", synthetic)
    assert cell_fingerprint(real, grid, "data", other) == base  # real cells ignore synthetic data
    assert cell_fingerprint(combined, grid, "data", other) != cell_fingerprint(combined, grid, "data", synthetic)
    other_model = replace(grid, model_settings={**grid.model_settings, "wrn28_2": ModelSettings(epochs=3)})
    assert cell_fingerprint(real, other_model, "data", synthetic) == base  # another model's settings
    own = replace(grid, model_settings={**grid.model_settings, "small_cnn": ModelSettings(epochs=3)})
    assert cell_fingerprint(real, own, "data", synthetic) != base


def test_ablation_cells_only_with_the_switch_and_on_their_own_synthetic_set():
    grid = tiny_grid(seeds=(0, 1), strategies=("real", "combined", "rsp"), baselines=("default", "autoaugment"))
    plain, with_ablation = plan_cells(grid), plan_cells(grid, ablation=True)
    assert all(c.synthetic_set == "mvc" for c in plain)
    assert with_ablation[: len(plain)] == plain  # the grid's cells, unchanged, then the ablation's
    extra = with_ablation[len(plain):]
    assert [c.name for c in extra] == [f"small_cnn-default-combined-no_mvc-seed{k}" for k in (0, 1)]
    assert plain[0].name == "small_cnn-default-real-seed0"  # MVC cells keep their names
    # only combined cells of the first baseline get a twin; no combined cells, no ablation
    no_combined = replace(grid, strategies=("real", "rsp"))
    assert plan_cells(no_combined, ablation=True) == plan_cells(no_combined)
    full = plan_cells(replace(grid, full_grid=True), ablation=True)
    assert {(c.baseline, c.strategy) for c in full if c.synthetic_set == "no_mvc"} == {("default", "combined")}
    # a no_mvc cell hashes the ablation set's digest, not the MVC set's; an MVC cell the reverse
    mvc, no_mvc = Cell("small_cnn", "default", "combined", 0), extra[0]
    digests = {"mvc": "mvc-1", "no_mvc": "ablation-1"}
    base = cell_fingerprint(no_mvc, grid, "data", digests)
    assert cell_fingerprint(no_mvc, grid, "data", {**digests, "mvc": "mvc-2"}) == base
    assert cell_fingerprint(no_mvc, grid, "data", {**digests, "no_mvc": "ablation-2"}) != base
    assert cell_fingerprint(mvc, grid, "data", {**digests, "no_mvc": "ablation-2"}) == cell_fingerprint(
        mvc, grid, "data", digests)
    # the same inputs on both sets still make two different cells
    assert cell_fingerprint(mvc, grid, "data", {"mvc": "same", "no_mvc": "same"}) != cell_fingerprint(
        no_mvc, grid, "data", {"mvc": "same", "no_mvc": "same"})


def test_a_no_mvc_cell_trains_on_the_ablation_set(splits):
    train, val, test = splits
    pixels = train.pixels[:20].flip(-2)
    ablation = ImageSet([f"u{i}" for i in range(20)], list(DIGIT_NAMES) * 2, [""] * 20, pixels)
    data = TrainingData(train, None, val, test, list(DIGIT_NAMES), synthetic_ablation=ablation)
    cell = Cell("small_cnn", "default", "combined", 0, "no_mvc")
    assert data.synthetic_of(cell) is ablation and data.synthetic_of(replace(cell, strategy="real")) is None
    result = train_cell(cell, data, tiny_grid())
    assert result.synthetic_set == "no_mvc" and 0.0 <= result.test_acc <= 1.0
    with pytest.raises(ValueError, match="combined-no_mvc-seed0 needs synthetic"):
        train_cell(cell, replace(data, synthetic=ablation, synthetic_ablation=None), tiny_grid())


def results() -> list[RunResult]:
    return [
        RunResult("small_cnn", "default", "real", 0, 3, 0.55, 0.5),
        RunResult("small_cnn", "default", "real", 1, 4, 0.65, 0.7),
        RunResult("small_cnn", "default", "combined", 0, 5, 0.8, 0.8),
        RunResult("small_cnn", "default", "combined", 1, 6, 0.9, 0.9),
        RunResult("small_cnn", "default", "combined", 2, 7, 1.0, 1.0),
    ]


def test_summarise_means_stds_and_gain():
    metrics = summarise(results())["small_cnn"]
    assert metrics["baseline"] == {"acc_mean": 0.6, "acc_std": round(math.sqrt(0.02), 4), "val_acc_mean": 0.6,
                                   "runs": 2}
    assert metrics["syn"] == {"acc_mean": 0.9, "acc_std": 0.1, "val_acc_mean": 0.9, "runs": 3, "gain": 0.3}
    assert set(metrics) == {"baseline", "syn"}


def test_summarise_paper_columns():
    runs = [RunResult("m", b, s, 0, 1, 0.5, acc) for b, s, acc in
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


def test_predict_gives_labels_for_a_confusion_matrix(splits):
    from mvcaug.train import fit_cell, predict

    train, val, test = splits
    data = TrainingData(train, None, val, test, list(DIGIT_NAMES))
    result, model = fit_cell(Cell("small_cnn", "default", "real", 0), data, tiny_grid())
    truth, predicted = predict(model, test, list(DIGIT_NAMES))
    assert truth == test.labels and len(predicted) == len(truth) and set(predicted) <= set(DIGIT_NAMES)
    assert math.isclose(sum(t == p for t, p in zip(truth, predicted)) / len(truth), result.test_acc)


def test_report_draws_one_validation_curve_per_grid_column():
    curves = {"small_cnn": {"baseline": [0.1, 0.5, 0.8], "syn": [0.2, 0.6, 0.9], "rsp": [0.3]}}
    page = render_html(summarise(results()), results(), [], [], curves=curves)
    assert page.count("<polyline") == 2  # a one-epoch curve has nothing to draw
    assert "&#9632; baseline" in page and "&#9632; syn" in page and "from 0.100 to 0.900" in page


def ablation_results() -> list[RunResult]:
    """Two seeds of real only, combined on the MVC set and combined on the P = Q = 0 set."""
    return results()[:2] + [
        RunResult("small_cnn", "default", "combined", 0, 5, 0.8, 0.8),
        RunResult("small_cnn", "default", "combined", 1, 6, 0.9, 0.9),
        RunResult("small_cnn", "default", "combined", 0, 5, 0.7, 0.6, "no_mvc"),
        RunResult("small_cnn", "default", "combined", 1, 6, 0.7, 0.8, "no_mvc"),
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
