"""Classifier training on a tiny real split: cells, strategies, budgets, more_real cells, digests."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mvcaug.data.images import ImageSet, to_image, to_tensor
from mvcaug.io.images import load_split
from mvcaug.core.params import ModelSettings, TrainParams, params_from_dict
from mvcaug.data.prepare import DIGIT_NAMES
from mvcaug.judging.cells import Cell, RunResult
from mvcaug.data.synthetic_sets import UNMIXED
from mvcaug.judging.train import (
    TrainError, TrainingData, budget_counts, cell_digest, corpus_counts, fit_cell, more_real_counts, plan_cells,
    plan_stage_cells, predict_classes, strategy_settings,
)


@pytest.fixture(scope="module")
def splits(digits_prepared):
    folder, _ = digits_prepared
    return tuple(load_split(folder, split, channels=1) for split in ("train", "val", "test"))


def mirrored(images: ImageSet, prefix: str, count: int) -> ImageSet:
    """`count` images of `images`, mirrored: stand-ins for synthetic or extra real images with known labels."""
    return ImageSet([f"{prefix}{i}" for i in range(count)], images.labels[:count], [""] * count,
                    images.pixels[:count].flip(-1))


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
    data = TrainingData(train, val, test, list(DIGIT_NAMES))
    result, _ = fit_cell(Cell("small_cnn", "default", "real", 3), data, tiny_grid(),
                         on_epoch=lambda epoch, logs: epochs.append((epoch, logs)))
    assert isinstance(result, RunResult) and result.cell == Cell("small_cnn", "default", "real", 3)
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
    data = TrainingData(train, val, test, list(DIGIT_NAMES), synthetic={"mvc": mirrored(train, "s", 20)})
    logs = []
    grid = tiny_grid(phase2_epochs=1, phase2_lr_factor=0.1)
    result, _ = fit_cell(Cell("small_cnn", "default", "two_phase", 0), data, grid, lambda e, v: logs.append(v["lr"]))
    # the rate each epoch's last step applied, along each phase's one-cycle schedule (peaks 0.002 and 0.0002)
    assert 0 < logs[1] < logs[0] < 0.002 and 0 < logs[2] < 0.002 * 0.1
    assert result.best_epoch == 2  # selected among phase 2's epochs only: the model has seen phase 2
    control_logs = []
    control, _ = fit_cell(Cell("small_cnn", "default", "real_two_phase", 0), data, grid,
                          lambda e, v: control_logs.append(v["lr"]))
    # two-phase's schedule: its phase 2 alike; in phase 1 the same one-cycle curve over fewer batches (no synthetic)
    assert control_logs[2:] == logs[2:] and control_logs[:2] == pytest.approx(logs[:2], abs=0.05 * 0.002)
    assert control.best_epoch == 2  # ...
    without_synthetic, _ = fit_cell(Cell("small_cnn", "default", "real_two_phase", 0),
                                    TrainingData(train, val, test, list(DIGIT_NAMES)), grid)
    assert without_synthetic == control  # ...on real images alone: the synthetic set is never read
    control_settings = strategy_settings(Cell("small_cnn", "default", "real_two_phase", 0), grid)
    assert control_settings == {"epochs": 1, "factor": 0.1}
    rsp, _ = fit_cell(Cell("small_cnn", "default", "rsp", 0), data, grid)
    assert 0.0 <= rsp.test_acc <= 1.0
    with pytest.raises(TrainError, match="combined-seed0 needs synthetic images"):
        fit_cell(Cell("small_cnn", "default", "combined", 0), TrainingData(train, val, test, list(DIGIT_NAMES)), grid)


def test_grid_cells_and_digests():
    grid = tiny_grid(seeds=(0, 1), strategies=("real", "combined"),
                     model_settings={"small_cnn": ModelSettings(), "wrn28_2": ModelSettings()}, models=("small_cnn", "wrn28_2"))
    cells = plan_cells(grid)
    assert len(cells) == 2 * 1 * 2 * 2 and len({c.name for c in cells}) == len(cells)
    full = plan_cells(replace(grid, full_grid=True))
    # every baseline x strategy, plus each two_phase cell's control: real only on the two-phase schedule
    assert len(full) == 2 * 4 * 4 * 2 + 2 * 4 * 2
    assert {c.strategy for c in full if not c.uses_synthetic} == {"real", "real_two_phase"}
    real, combined = Cell("small_cnn", "default", "real", 0), Cell("small_cnn", "default", "combined", 0)
    synthetic, other = {"mvc": "synthetic"}, {"mvc": "other synthetic"}
    base = cell_digest(real, grid, "data", synthetic)
    assert cell_digest(real, grid, "data", other) == base  # real cells ignore synthetic data
    assert cell_digest(combined, grid, "data", other) != cell_digest(combined, grid, "data", synthetic)
    other_model = replace(grid, model_settings={**grid.model_settings, "wrn28_2": ModelSettings(epochs=3)})
    assert cell_digest(real, other_model, "data", synthetic) == base  # another model's settings
    own = replace(grid, model_settings={**grid.model_settings, "small_cnn": ModelSettings(epochs=3)})
    assert cell_digest(real, own, "data", synthetic) != base


def test_ablation_cells_only_with_the_switch_and_on_their_own_synthetic_set():
    grid = tiny_grid(seeds=(0, 1), strategies=("real", "combined", "rsp"), baselines=("default", "autoaugment"))
    plain, with_unmixed = plan_cells(grid), plan_cells(grid, other_sets=["unmixed"])
    assert all(c.synthetic_set == "mvc" for c in plain)
    assert with_unmixed[: len(plain)] == plain  # the grid's cells, unchanged, then the unmixed set's
    extra = with_unmixed[len(plain):]
    assert [c.name for c in extra] == [f"small_cnn-default-combined-unmixed-seed{k}" for k in (0, 1)]
    assert plain[0].name == "small_cnn-default-real-seed0"  # MVC cells keep their names
    # only combined cells of the first baseline get a copy; no combined cells, no unmixed cells
    no_combined = replace(grid, strategies=("real", "rsp"))
    assert plan_cells(no_combined, other_sets=["unmixed"]) == plan_cells(no_combined)
    full = plan_cells(replace(grid, full_grid=True), other_sets=["unmixed"])
    assert {(c.baseline, c.strategy) for c in full if c.synthetic_set == "unmixed"} == {("default", "combined")}
    # an unmixed cell hashes the unmixed set's digest, not the MVC set's; an MVC cell the reverse
    mvc, unmixed = Cell("small_cnn", "default", "combined", 0), extra[0]
    digests = {"mvc": "mvc-1", "unmixed": "unmixed-1"}
    base = cell_digest(unmixed, grid, "data", digests)
    assert cell_digest(unmixed, grid, "data", {**digests, "mvc": "mvc-2"}) == base
    assert cell_digest(unmixed, grid, "data", {**digests, "unmixed": "unmixed-2"}) != base
    assert cell_digest(mvc, grid, "data", {**digests, "unmixed": "unmixed-2"}) == cell_digest(
        mvc, grid, "data", digests)
    # the same inputs on both sets still make two different cells
    assert cell_digest(mvc, grid, "data", {"mvc": "same", "unmixed": "same"}) != cell_digest(
        unmixed, grid, "data", {"mvc": "same", "unmixed": "same"})


def test_an_unmixed_cell_trains_on_the_unmixed_set(splits):
    train, val, test = splits
    pixels = train.pixels[:20].flip(-2)
    unmixed = ImageSet([f"u{i}" for i in range(20)], list(DIGIT_NAMES) * 2, [""] * 20, pixels)
    data = TrainingData(train, val, test, list(DIGIT_NAMES), synthetic={"unmixed": unmixed})
    cell = Cell("small_cnn", "default", "combined", 0, "unmixed")
    assert data.pool(cell) == (train, unmixed) and data.pool(replace(cell, strategy="real")) == (train, None)
    result, _ = fit_cell(cell, data, tiny_grid())
    assert result.cell.synthetic_set == "unmixed" and 0.0 <= result.test_acc <= 1.0
    with pytest.raises(TrainError, match="combined-unmixed-seed0 needs synthetic"):
        fit_cell(cell, replace(data, synthetic={"mvc": unmixed}), tiny_grid())


def on_test_accuracy(predicted: torch.Tensor, test) -> float:
    """The test accuracy counted from on_test's class indices and the split's labels."""
    pairs = zip(predicted.tolist(), test.labels, strict=True)
    return sum(DIGIT_NAMES[i] == label for i, label in pairs) / len(test.labels)


def test_on_test_gets_the_predictions_the_test_accuracy_counts(splits):
    """The train stage's confusion matrix comes from on_test: the class indices of the best validation weights."""
    train, val, test = splits
    data = TrainingData(train, val, test, list(DIGIT_NAMES))
    seen: list[torch.Tensor] = []
    result, model = fit_cell(Cell("small_cnn", "default", "real", 0), data, tiny_grid(), on_test=seen.append)
    assert len(seen) == 1 and len(seen[0]) == len(test.labels)
    assert math.isclose(on_test_accuracy(seen[0], test), result.test_acc)
    assert torch.equal(seen[0], predict_classes(model, test.pixels))  # the weights fit_cell returns


def test_a_bf16_cell_trains_under_autocast_and_is_scored_under_it(splits):
    train, val, test = splits
    data = TrainingData(train, val, test, list(DIGIT_NAMES))
    bf16, fp32 = (tiny_grid(model_settings={"small_cnn": ModelSettings(epochs=2, batch_size=16, width=4,
                                                                        mixed_precision=precision)})
                  for precision in ("bf16", "no"))
    cell = Cell("small_cnn", "default", "real", 3)
    losses: dict[str, list[float]] = {"bf16": [], "no": []}
    seen: list[torch.Tensor] = []
    result, model = fit_cell(cell, data, bf16, on_epoch=lambda _, logs: losses["bf16"].append(logs["train_loss"]),
                             on_test=seen.append)
    fit_cell(cell, data, fp32, on_epoch=lambda _, logs: losses["no"].append(logs["train_loss"]))
    assert losses["bf16"] != losses["no"]  # the same seed and batches: only the arithmetic differs
    assert math.isclose(on_test_accuracy(seen[0], test), result.test_acc)
    assert torch.equal(seen[0], predict_classes(model, test.pixels, precision="bf16"))  # scored under autocast
    assert model.features[0][0].weight.dtype == torch.float32  # autocast: the weights stay float32
    assert cell_digest(cell, bf16, "d", {}) != cell_digest(cell, fp32, "d", {})


def test_auto_precision_trains_as_the_device_resolves_it_and_the_digest_holds_what_it_resolved_to(splits, monkeypatch):
    """auto is bf16 on a device that computes it natively (this CPU, where it has AMX), else float32: a cell
    trained on auto equals the cell trained on what auto resolved to here, and its digest differs between a device
    that resolves auto to bf16 and one that resolves it to float32, so a stored cell is never reused across them."""
    from mvcaug.core.devices import autocast_precision, native_bf16

    train, val, test = splits
    data = TrainingData(train, val, test, list(DIGIT_NAMES))
    grids = {precision: tiny_grid(model_settings={"small_cnn": ModelSettings(epochs=2, batch_size=16, width=4,
                                                                              mixed_precision=precision)})
             for precision in ("auto", "bf16", "no")}
    cell = Cell("small_cnn", "default", "real", 3)
    here = autocast_precision("auto", torch.device("cpu"))
    assert here == ("bf16" if native_bf16(torch.device("cpu")) else "no")
    losses: dict[str, list[float]] = {"auto": [], here: []}
    for precision in ("auto", here):
        fit_cell(cell, data, grids[precision],
                 on_epoch=lambda _, logs, p=precision: losses[p].append(logs["train_loss"]))
    assert losses["auto"] == losses[here]
    meta = torch.device("meta")  # a device with no native bf16: auto resolves to float32 there
    cpu_digest, meta_digest = (cell_digest(cell, grids["auto"], "d", {}, device)
                               for device in (torch.device("cpu"), meta))
    assert (cpu_digest != meta_digest) == (here == "bf16")
    # "no" resolves alike on both; the CPU's digest also holds the torch threads its cells train on (CPU_THREADS)
    assert cell_digest(cell, grids["no"], "d", {}, torch.device("cpu")) != cell_digest(cell, grids["no"], "d", {}, meta)
    monkeypatch.setattr("mvcaug.judging.train.CPU_THREADS", None)
    assert cell_digest(cell, grids["no"], "d", {}, torch.device("cpu")) == cell_digest(cell, grids["no"], "d", {}, meta)


def test_fit_cell_returns_contiguous_weights_that_safetensors_can_store(splits, tmp_path):
    from safetensors.torch import save_file

    train, val, test = splits
    _, model = fit_cell(Cell("small_cnn", "default", "real", 3), TrainingData(train, val, test, list(DIGIT_NAMES)),
                        tiny_grid())
    state = model.state_dict()
    assert all(tensor.is_contiguous() for tensor in state.values())  # trained channels_last, returned as stored
    save_file(state, tmp_path / "model.safetensors")  # refuses non-contiguous tensors


def test_an_unknown_autocast_precision_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="mixed_precision.*one of auto, no, bf16"):
        params_from_dict({"train": {"model_settings": {"small_cnn": {"mixed_precision": "fp16"}}}})


def test_pretrained_cells_for_table_4_come_after_the_unmixed_ones():
    grid = tiny_grid(seeds=(0, 1), strategies=("real", "combined"))
    cells = plan_cells(grid, other_sets=["unmixed", "pretrained"])
    others = cells[len(plan_cells(grid)):]
    assert [c.name for c in others] == ["small_cnn-default-combined-unmixed-seed0", "small_cnn-default-combined-unmixed-seed1",
                                       "small_cnn-default-combined-pretrained-seed0",
                                       "small_cnn-default-combined-pretrained-seed1"]


def test_budget_and_more_real_cells_pair_with_the_grid_by_seed():
    grid = tiny_grid(seeds=(0, 1), strategies=("real", "combined", "rsp"), baselines=("default", "autoaugment"))
    assert budget_counts((0.25, 0.5, 1.0), 20) == [5, 10, 20] and budget_counts((0.01, 0.02), 20) == [1]
    cells = plan_cells(grid, budgets=[5, 10, 20], images_per_class=20, more_real=[5, 10, 20])
    assert cells[: len(plan_cells(grid))] == plan_cells(grid)  # the grid first, unchanged
    budget = [c for c in cells if c.added_per_class and c.strategy == "combined"]
    assert [c.name for c in budget] == ["small_cnn-default-combined-n5-seed0", "small_cnn-default-combined-n5-seed1",
                                        "small_cnn-default-combined-n10-seed0", "small_cnn-default-combined-n10-seed1"]
    more_real = [c for c in cells if c.strategy == "more_real"]
    assert [(c.added_per_class, c.seed) for c in more_real] == [(5, 0), (5, 1), (10, 0), (10, 1), (20, 0), (20, 1)]
    assert all(c.baseline == "default" and not c.uses_synthetic for c in more_real)
    assert len({c.name for c in cells}) == len(cells)


def test_a_budget_cell_trains_on_the_first_k_synthetic_images_per_class(splits):
    train, val, test = splits
    synthetic = mirrored(train, "s", 60)  # 6 per class
    data = TrainingData(train, val, test, list(DIGIT_NAMES), synthetic={"mvc": synthetic})
    real, used = data.pool(Cell("small_cnn", "default", "combined", 0, added_per_class=2))
    assert real is train and len(used.ids) == 20
    assert all(used.labels.count(label) == 2 for label in DIGIT_NAMES)
    first_two = [i for label in DIGIT_NAMES for i in [k for k, lab in enumerate(synthetic.labels) if lab == label][:2]]
    assert sorted(used.ids) == sorted(synthetic.ids[i] for i in first_two)


def test_a_more_real_cell_adds_k_real_images_per_class_and_no_synthetic_ones(splits):
    train, val, test = splits
    reference = ImageSet([f"r{i}" for i in range(30)], test.labels[:30], [""] * 30, test.pixels[:30])
    data = TrainingData(train, val, test, list(DIGIT_NAMES), synthetic={"mvc": mirrored(train, "s", 20)},
                        reference=reference)
    cell = Cell("small_cnn", "default", "more_real", 0, added_per_class=1)
    real, synthetic = data.pool(cell)
    assert synthetic is None and real.ids[: len(train.ids)] == train.ids
    assert sorted(real.ids[len(train.ids):]) == sorted(reference.first_per_class(1).ids)
    result, _ = fit_cell(cell, data, tiny_grid())
    assert result.cell.strategy == "more_real" and 0.0 <= result.test_acc <= 1.0
    with pytest.raises(TrainError, match="reference_per_class"):
        fit_cell(cell, replace(data, reference=None), tiny_grid())


def test_a_cells_digest_follows_its_code():
    grid = tiny_grid()
    cell = Cell("small_cnn", "default", "real", 0)
    base = cell_digest(cell, grid, "data", {})
    assert cell_digest(cell, grid, "data", {}) == base
    assert cell_digest(replace(cell, added_per_class=5, strategy="more_real"), grid, "data", {}) != base
    assert cell_digest(cell, grid, "other data", {}) != base


def test_corpus_cells_follow_the_more_real_cells_at_the_budget_counts():
    grid = tiny_grid(seeds=(0, 1), strategies=("real", "combined"))
    cells = plan_cells(grid, budgets=[5, 20], images_per_class=20, more_real=[5, 20], corpus=[5, 20])
    assert cells[: len(plan_cells(grid, budgets=[5, 20], images_per_class=20, more_real=[5, 20]))] == \
        plan_cells(grid, budgets=[5, 20], images_per_class=20, more_real=[5, 20])
    corpus = [c for c in cells if c.strategy == "corpus"]
    assert [c.name for c in corpus] == ["small_cnn-default-corpus-n5-seed0", "small_cnn-default-corpus-n5-seed1",
                                        "small_cnn-default-corpus-n20-seed0", "small_cnn-default-corpus-n20-seed1"]
    assert not any(c.uses_synthetic for c in corpus)


def test_the_stage_plans_more_real_and_corpus_cells_from_the_params():
    """The train stage's plan as params.yaml gives it: more_real cells only with a reference split, corpus cells
    from the glyph corpus or a retrieval folder with classes, cells on the unmixed set only with the ablation."""
    raw = {"prepare": {"reference_per_class": 20}, "generate": {"images_per_class": 20, "ablation": True},
           "train": {"seeds": [0, 1], "strategies": ["real", "combined"]}, "pretrain": {"source": "glyphs"}}
    params = params_from_dict(raw)
    assert more_real_counts(params) == corpus_counts(params, False) == [5, 10, 20]
    assert plan_stage_cells(params, False) == plan_cells(params.train, other_sets=[UNMIXED], budgets=[5, 10, 20],
                                                         images_per_class=20, more_real=[5, 10, 20],
                                                         corpus=[5, 10, 20])
    plain = params_from_dict({**raw, "prepare": {}, "generate": {"images_per_class": 20, "ablation": False},
                              "pretrain": {"source": "none"}})
    assert more_real_counts(plain) == corpus_counts(plain, False) == []
    assert plan_stage_cells(plain, False) == plan_cells(plain.train, budgets=[5, 10, 20], images_per_class=20)
    assert corpus_counts(plain, True) == [5, 10, 20]  # retrieved real images of the classes instead of glyphs
    assert [c.strategy for c in plan_stage_cells(plain, True)].count("corpus") == 3 * 2  # three counts, two seeds


def test_a_corpus_cell_adds_k_corpus_images_per_class(splits):
    train, val, test = splits
    corpus = mirrored(train, "g", 30)  # 3 per class
    data = TrainingData(train, val, test, list(DIGIT_NAMES), corpus=corpus)
    cell = Cell("small_cnn", "default", "corpus", 0, added_per_class=2)
    real, synthetic = data.pool(cell)
    assert synthetic is None and real.ids[: len(train.ids)] == train.ids
    assert sorted(real.ids[len(train.ids):]) == sorted(corpus.first_per_class(2).ids)
    result, _ = fit_cell(cell, data, tiny_grid())
    assert result.cell.strategy == "corpus" and 0.0 <= result.test_acc <= 1.0
    with pytest.raises(TrainError, match="pretrain"):
        fit_cell(cell, replace(data, corpus=None), tiny_grid())
    # the corpus's images are part of the cell's digest
    grid = tiny_grid()
    assert cell_digest(cell, grid, "data", {"corpus": "a"}) != cell_digest(cell, grid, "data", {"corpus": "b"})
