"""What the train stage runs and returns: cells (one classifier run each) and their results.

Kept apart from the training code so that readers of results (the report) need neither torch nor timm.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from mvcaug.core.params import Strategy
from mvcaug.data.synthetic_sets import MVC

STRATEGIES: tuple[str, ...] = typing.get_args(Strategy)
REFERENCE = "reference"
"""The strategy of reference cells: real images only, k held-out real images per class added."""
CORPUS = "corpus"
"""The strategy of corpus cells: real images plus k images per class of the generator's own pretraining corpus
(the pretrain stage's glyphs of the task's classes), at the budget counts: does the generator add anything
beyond the data it was trained on?"""
REAL_TWO_PHASE = "real_two_phase"
"""The strategy of two-phase's control cells: real images only, on two-phase's schedule (its epochs and its
learning-rate drop), so that two-phase's gain is not the longer schedule's."""
PREDICTIONS_FILE = "predictions.parquet"
"""In a cell's folder: its kept classifier's prediction for every test image (id, truth, predicted), for the
report's bootstrap over test images. Written before result.json, which marks a cell complete."""
CONTROL_OF = {"two_phase": REAL_TWO_PHASE}
"""The real-only control of a synthetic strategy, where it is not plain `real`."""


@dataclass(frozen=True)
class Cell:
    """One classifier run."""

    model: str
    baseline: str
    strategy: str
    seed: int
    synthetic_set: str = MVC
    """mvc, or no_mvc for the MVC ablation's cells (only they name it, so MVC cells keep their names)."""
    per_class: int = 0
    """Budget cells: synthetic images per class (combined); reference cells: real images added per class;
    corpus cells: pretraining-corpus images added per class.
    0 = every synthetic image (grid cells)."""

    @property
    def name(self) -> str:
        ablation = f"-{self.synthetic_set}" if self.synthetic_set != MVC else ""
        budget = f"-n{self.per_class}" if self.per_class else ""
        return f"{self.model}-{self.baseline}-{self.strategy}{ablation}{budget}-seed{self.seed}"

    @property
    def uses_synthetic(self) -> bool:
        return self.strategy not in ("real", REFERENCE, REAL_TWO_PHASE, CORPUS)


@dataclass(frozen=True)
class RunResult:
    """A cell's outcome: best validation accuracy, its epoch, and the test accuracy there."""

    cell: Cell
    best_epoch: int
    val_acc: float
    test_acc: float

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: Mapping) -> RunResult:
        return cls(Cell(**payload["cell"]), int(payload["best_epoch"]), float(payload["val_acc"]),
                   float(payload["test_acc"]))
