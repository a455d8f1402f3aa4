"""A few real classifier cells on the bundled digits, trained by the train stage's tasks (dvclive logs,
result.json, the plots folder), for tests of what that stage writes."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from mvcaug.data.images import ImageSet
from mvcaug.core.params import ModelSettings, TrainParams
from mvcaug.data.prepare import DIGIT_NAMES
from mvcaug.judging.cells import Cell
from mvcaug.judging.train import TrainingData
from mvcaug.io.catalog import FILES

# two seeds of one grid column and one seed of another: seeds pool, columns stay apart
CELLS = (Cell("small_cnn", "default", "real", 0), Cell("small_cnn", "default", "real", 1),
         Cell("small_cnn", "default", "combined", 0))
GRID = TrainParams(strategies=("real", "combined"), seeds=(0, 1),
                   model_settings={"small_cnn": ModelSettings(epochs=2, batch_size=16, width=4)})


def digits_data(n_train: int = 40, n_val: int = 30, n_test: int = 40) -> TrainingData:
    """Consecutive slices of scikit-learn's digits at 16 px; the training images mirrored as "synthetic"."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.tensor(digits.images / 8.0 - 1.0, dtype=torch.float32)[:, None]
    pixels = F.interpolate(pixels, size=(16, 16), mode="bilinear").clamp(-1, 1)
    labels = [DIGIT_NAMES[t] for t in digits.target]

    def images(start: int, stop: int, flip: bool = False) -> ImageSet:
        part = pixels[start:stop].flip(-1) if flip else pixels[start:stop]
        return ImageSet([f"d{i}" for i in range(start, stop)], labels[start:stop], [""] * (stop - start), part)

    val_end, test_end = n_train + n_val, n_train + n_val + n_test
    return TrainingData(images(0, n_train), images(n_train, val_end), images(val_end, test_end), list(DIGIT_NAMES),
                        synthetic={"mvc": images(0, n_train, flip=True)})


def train_cells(train_dir: Path, cells: tuple[Cell, ...] = CELLS) -> TrainingData:
    """Train `cells` into train_dir/cells/<cell>/ with the train task, then write train_dir/plots/."""
    from tasks.train import train_cell, train_plots

    data = digits_data()
    for cell in cells:
        train_cell.fn(cell, data, GRID, {"data": "test", "mvc": "test"}, str(train_dir / "cells"))
    train_plots.fn(list(cells), str(train_dir / "cells"), str(train_dir / FILES.plots))
    return data
