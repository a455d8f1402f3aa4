"""What the train stage runs and returns: cells (one classifier run each) and their results.

Kept apart from the training code so that readers of results (the report) need neither torch nor timm.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from mvcaug.params import Strategy
from mvcaug.synthetic_sets import MVC

STRATEGIES: tuple[str, ...] = typing.get_args(Strategy)
REFERENCE = "reference"
"""The strategy of reference cells: real images only, k held-out real images per class added."""


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
    """Budget cells: synthetic images per class (combined); reference cells: real images added per class.
    0 = every synthetic image (grid cells)."""

    @property
    def name(self) -> str:
        ablation = f"-{self.synthetic_set}" if self.synthetic_set != MVC else ""
        budget = f"-n{self.per_class}" if self.per_class else ""
        return f"{self.model}-{self.baseline}-{self.strategy}{ablation}{budget}-seed{self.seed}"

    @property
    def uses_synthetic(self) -> bool:
        return self.strategy not in ("real", REFERENCE)


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
