"""Classifier training on a tiny real split, the metrics summary and the HTML report."""

from __future__ import annotations

import base64
import io
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from mvcaug.images import ImageSet, load_split, to_image, to_tensor
from mvcaug.params import TrainParams
from mvcaug.prepare import DIGIT_NAMES
from mvcaug.report import SampleRow, render_html, summarise
from mvcaug.train import RunResult, train_one, training_set


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


def test_train_one_on_a_tiny_split(splits):
    train, val, test = splits
    params = TrainParams(epochs=2, batch_size=16, width=4)
    epochs = []
    result = train_one("real", 3, train, val, test, list(DIGIT_NAMES), params,
                       on_epoch=lambda epoch, logs: epochs.append((epoch, logs)))
    assert isinstance(result, RunResult)
    assert (result.setting, result.seed) == ("real", 3)
    assert 0.0 <= result.val_acc <= 1.0 and 0.0 <= result.test_acc <= 1.0
    # accuracies are counts over 40 images
    assert math.isclose(result.test_acc * 40, round(result.test_acc * 40))
    assert [e for e, _ in epochs] == [0, 1]
    assert all(math.isfinite(logs["train_loss"]) and logs["train_loss"] > 0 for _, logs in epochs)
    # the kept epoch is the best validation epoch (the first one on a tie)
    vals = [logs["val_acc"] for _, logs in epochs]
    assert result.val_acc == max(vals)
    assert result.best_epoch == vals.index(max(vals))


def test_training_set_settings(splits):
    train, _, _ = splits
    assert training_set("real", train, None) is train
    synthetic = ImageSet(["s0", "s1"], ["zero", "one"], ["", ""], torch.zeros(2, 1, 16, 16))
    both = training_set("real+synthetic", train, synthetic)
    assert both.ids == train.ids + ["s0", "s1"] and both.pixels.shape[0] == len(train.ids) + 2
    with pytest.raises(ValueError, match="synthetic"):
        training_set("real+synthetic", train, None)


def results() -> list[RunResult]:
    return [
        RunResult("real", 0, 3, 0.55, 0.5),
        RunResult("real", 1, 4, 0.65, 0.7),
        RunResult("real+synthetic", 0, 5, 0.8, 0.8),
        RunResult("real+synthetic", 1, 6, 0.9, 0.9),
        RunResult("real+synthetic", 2, 7, 1.0, 1.0),
    ]


def test_summarise_means_stds_and_gain():
    metrics = summarise(results())
    assert metrics["real"] == {"acc_mean": 0.6, "acc_std": round(math.sqrt(0.02), 4), "val_acc_mean": 0.6,
                               "runs": 2}
    assert metrics["real+synthetic"] == {"acc_mean": 0.9, "acc_std": 0.1, "val_acc_mean": 0.9, "runs": 3}
    assert metrics["gain"] == 0.3
    assert set(metrics) == {"real", "real+synthetic", "gain"}


def test_summarise_single_run_and_single_setting():
    metrics = summarise([RunResult("real", 0, 1, 0.4, 0.25)])
    assert metrics == {"real": {"acc_mean": 0.25, "acc_std": 0.0, "val_acc_mean": 0.4, "runs": 1}}
    worse = summarise([RunResult("real", 0, 1, 0.5, 0.75), RunResult("real+synthetic", 0, 1, 0.5, 0.5)])
    assert worse["gain"] == -0.25


def test_render_html_has_the_table_and_inline_images():
    metrics = summarise(results())
    real = [Image.new("L", (8, 8), 40), Image.new("L", (8, 8), 200)]
    synthetic = [Image.new("L", (8, 8), 90)]
    conditioning = [Image.new("L", (8, 8), 10)]
    samples = [SampleRow("zero", real, synthetic, conditioning),
               SampleRow("<one>", real[:1], synthetic, conditioning)]
    page = render_html(metrics, results(), samples, [1.0, 0.8, 0.5, 0.4], title="tiny & test")
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<title>tiny &amp; test</title>" in page
    assert "<td>real</td><td>60.00 ± 14.14</td><td>60.00</td><td>2</td>" in page
    assert "<td>real+synthetic</td><td>90.00 ± 10.00</td><td>90.00</td><td>3</td>" in page
    assert "+30.00 points" in page
    assert "<td>real+synthetic</td><td>2</td><td>7</td><td>100.00</td><td>100.00</td>" in page
    assert "&lt;one&gt;" in page and "<one>" not in page
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == (2 + 2) + (1 + 2)  # per row: real images, then (conditioning, synthetic) pairs
    decoded = [Image.open(io.BytesIO(base64.b64decode(u))) for u in uris]
    assert decoded[0].size == (32, 32)  # real images at 4x
    assert decoded[0].getpixel((0, 0)) == 40
    assert {im.size for im in decoded} == {(32, 32), (16, 16)}  # conditioning images at 2x
    assert "<svg" in page and "over 4 steps" in page


def test_render_html_without_gain_or_losses():
    metrics = summarise(results()[:2])
    page = render_html(metrics, results()[:2], [], [])
    assert "Gain" not in page and "<svg" not in page
    assert "data:image/png" not in page
