"""What the train stage runs and returns: cells (one classifier run each) and their results.

Kept apart from the training code so that readers of results (the report) need neither torch nor timm.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from mvcaug.core.params import Strategy
from mvcaug.data.synthetic_sets import MVC

__all__ = ["STRATEGIES", "MORE_REAL", "CORPUS", "REAL_TWO_PHASE", "CONTROL_OF", "Cell", "RunResult"]

STRATEGIES: tuple[str, ...] = typing.get_args(Strategy)
MORE_REAL = "more_real"
"""The strategy of more_real cells: real images only, the training split plus k images per class of the held-out
reference split (prepare.reference_per_class), at the budget counts: what as many more real images give."""
CORPUS = "corpus"
"""The strategy of corpus cells: real images plus k images per class of the generator's own pretraining corpus
(the pretrain stage's glyphs of the task's classes), at the budget counts: does the generator add anything
beyond the data it was trained on?"""
REAL_TWO_PHASE = "real_two_phase"
"""The strategy of two-phase's control cells: real images only, on two-phase's schedule (its epochs and its
learning-rate drop), so that two-phase's gain is not the longer schedule's."""
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
    """mvc, or the other set a cell trains on (unmixed: the MVC ablation's cells; pretrained: Table 4's); only
    those name it, so MVC cells keep their names."""
    added_per_class: int = 0
    """Images per class added to the real training split, of the kind the strategy adds: synthetic ones (combined
    budget cells: the first k of each class), held-out real ones (more_real cells), pretraining-corpus ones (corpus
    cells). 0 = none counted: every synthetic image of the set (grid cells), or none (real only)."""

    @property
    def name(self) -> str:
        other_set = f"-{self.synthetic_set}" if self.synthetic_set != MVC else ""
        added = f"-n{self.added_per_class}" if self.added_per_class else ""
        return f"{self.model}-{self.baseline}-{self.strategy}{other_set}{added}-seed{self.seed}"

    @property
    def uses_synthetic(self) -> bool:
        return self.strategy not in ("real", MORE_REAL, REAL_TWO_PHASE, CORPUS)


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
