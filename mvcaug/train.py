"""Train classifiers over the evaluation grid: model x augmentation baseline x strategy x seed.

Each (model, baseline, strategy, seed) is a cell with a fingerprint of its inputs; a cell whose
stored result has the same fingerprint is kept, so adding a cell trains only that cell and changing
one model's settings retrains only that model's cells. Model selection uses the validation split
only; the test split is scored once, with the best validation weights.

The MVC ablation adds twins of the combined cells of the first baseline that train on the synthetic
set generated from P = Q = 0 embeddings (`no_mvc`) instead of the MVC set (`mvc`): same seeds, same
model, same conditioning images, only the mixing differs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from mvcaug.augment import BASELINES, augment_batch, baseline_transform
from mvcaug.classifiers import create_classifier
from mvcaug.images import ImageSet, resize, to_tensor
from mvcaug.params import STRATEGIES, ModelSettings, TrainParams
from mvcaug.strategies import Phase, combined_epoch, rsp_batches, two_phase_plan

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]

MVC, NO_MVC = "mvc", "no_mvc"  # the synthetic set a cell trains on: MVC mixes, or the P = Q = 0 ablation


@dataclass(frozen=True)
class Cell:
    """One classifier run of the grid."""

    model: str
    baseline: str
    strategy: str
    seed: int
    synthetic_set: str = MVC
    """mvc, or no_mvc for the ablation's cells (which only they name, so MVC cells keep their names)."""

    @property
    def name(self) -> str:
        ablation = f"-{self.synthetic_set}" if self.synthetic_set != MVC else ""
        return f"{self.model}-{self.baseline}-{self.strategy}{ablation}-seed{self.seed}"


@dataclass(frozen=True)
class RunResult:
    """A cell's outcome: best validation accuracy, its epoch, and the test accuracy there."""

    model: str
    baseline: str
    strategy: str
    seed: int
    best_epoch: int
    val_acc: float
    test_acc: float
    synthetic_set: str = MVC


@dataclass
class TrainingData:
    """Every split in memory, and the class order shared by all cells."""

    real: ImageSet
    synthetic: ImageSet | None
    val: ImageSet
    test: ImageSet
    classes: list[str]
    synthetic_ablation: ImageSet | None = None  # generated from the P = Q = 0 embeddings

    def synthetic_of(self, cell: Cell) -> ImageSet | None:
        """The synthetic images a cell trains on: none for real-only cells."""
        if cell.strategy == "real":
            return None
        return self.synthetic_ablation if cell.synthetic_set == NO_MVC else self.synthetic


def load_synthetic(synthetic_dir: str | Path, channels: int) -> ImageSet:
    """The generated images listed in synthetic/manifest.parquet."""
    from PIL import Image

    folder = Path(synthetic_dir)
    rows = pq.read_table(folder / "manifest.parquet").to_pylist()
    pixels = torch.stack([to_tensor(Image.open(folder / r["path"]), channels) for r in rows])
    return ImageSet([r["path"] for r in rows], [r["label"] for r in rows], [""] * len(rows), pixels)


def plan_cells(params: TrainParams, ablation: bool = False) -> list[Cell]:
    """The grid; full_grid expands to every baseline and strategy for the listed models. With the MVC
    ablation, each combined cell of the first baseline gets a no_mvc twin, listed after the grid."""
    baselines = BASELINES if params.full_grid else params.baselines
    strategies = STRATEGIES if params.full_grid else params.strategies
    cells = [Cell(m, b, s, seed) for m in params.models for b in baselines for s in strategies for seed in params.seeds]
    if ablation:
        cells += [replace(c, synthetic_set=NO_MVC) for c in cells
                  if c.baseline == baselines[0] and c.strategy == "combined"]
    return cells


def cell_fingerprint(cell: Cell, params: TrainParams, data_digest: str, synthetic_digests: Mapping[str, str]) -> str:
    """A hash of everything the cell's result depends on (and nothing else, so other cells stay).
    `synthetic_digests` maps each synthetic set (mvc, no_mvc) to a digest of its images; a cell hashes
    only the one it trains on."""
    uses_synthetic = cell.strategy != "real"
    strategy_params = {
        "combined": {"ratio": params.synthetic_ratio},
        "rsp": {"p": params.rsp_p},
        "two_phase": {"ratio": params.synthetic_ratio, "epochs": params.phase2_epochs,
                      "factor": params.phase2_lr_factor, "selection": "last phase"},
    }.get(cell.strategy, {})
    identity = asdict(cell)
    if cell.synthetic_set == MVC:
        del identity["synthetic_set"]  # as before the ablation existed, so stored MVC cells stay valid
    payload = {
        "cell": identity, "settings": asdict(params.model_settings[cell.model]),
        "flip": params.flip, "strategy": strategy_params, "data": data_digest,
        "synthetic": synthetic_digests[cell.synthetic_set] if uses_synthetic else "", "version": 1,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def phases(cell: Cell, settings: ModelSettings, params: TrainParams) -> list[Phase]:
    if cell.strategy == "two_phase":
        return two_phase_plan(settings.epochs, params.phase2_epochs, settings.learning_rate, params.phase2_lr_factor)
    return [Phase(cell.strategy, settings.epochs, settings.learning_rate, cell.strategy != "real")]


def epoch_batches(
    phase: Phase, strategy: str, n_real: int, n_syn: int, batch: int, params: TrainParams, gen: torch.Generator
) -> Iterator[torch.Tensor]:
    """Index batches into [real; synthetic] for one epoch of a phase."""
    if strategy == "rsp" and phase.use_synthetic:
        yield from rsp_batches(n_real, n_syn, batch, math.ceil((n_real + n_syn) / batch), params.rsp_p, gen)
        return
    if phase.use_synthetic:
        ratio = None if params.synthetic_ratio < 0 else params.synthetic_ratio
        order = combined_epoch(n_real, n_syn, ratio, gen)
    else:
        order = torch.randperm(n_real, generator=gen)
    yield from order.split(batch)


def make_optimizer(model: torch.nn.Module, settings: ModelSettings, lr: float) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                               weight_decay=settings.weight_decay)
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=settings.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=settings.weight_decay)


@torch.no_grad()
def accuracy(model: torch.nn.Module, pixels: torch.Tensor, targets: torch.Tensor, batch: int = 512) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(pixels), batch):
        correct += (model(pixels[start : start + batch]).argmax(1) == targets[start : start + batch]).sum().item()
    return correct / max(1, len(pixels))


def train_cell(cell: Cell, data: TrainingData, params: TrainParams, on_epoch: EpochCallback | None = None) -> RunResult:
    """Train one cell; keep the weights of the best validation epoch of its last phase; report their test accuracy."""
    return fit_cell(cell, data, params, on_epoch)[0]


def fit_cell(
    cell: Cell, data: TrainingData, params: TrainParams, on_epoch: EpochCallback | None = None
) -> tuple[RunResult, torch.nn.Module]:
    """train_cell, also returning the model with its best validation weights (in eval mode)."""
    # 1. Inputs at the model's size, labels as indices, one seeded stream for everything random.
    settings = params.model_settings[cell.model]
    size = settings.image_size or data.real.pixels.shape[-1]
    torch.manual_seed(cell.seed)
    gen = torch.Generator().manual_seed(cell.seed)
    index = {label: i for i, label in enumerate(data.classes)}
    targets = lambda s: torch.tensor([index[label] for label in s.labels])  # noqa: E731
    synthetic = data.synthetic_of(cell)
    if cell.strategy != "real" and (synthetic is None or not synthetic.ids):
        raise ValueError(f"cell {cell.name} needs synthetic images; run the generate stage")
    pool = torch.cat([data.real.pixels] + ([synthetic.pixels] if synthetic else []))
    pool, val_x, test_x = (resize(x, size) for x in (pool, data.val.pixels, data.test.pixels))
    y_pool = torch.cat([targets(data.real)] + ([targets(synthetic)] if synthetic else []))
    y_val, y_test = targets(data.val), targets(data.test)
    n_real, n_syn = len(data.real.ids), (len(synthetic.ids) if synthetic else 0)
    # 2. The model and its augmentation.
    extra = {"width": settings.width} if cell.model == "small_cnn" else {}
    model = create_classifier(cell.model, len(data.classes), pool.shape[1], settings.pretrained, **extra)
    transform = baseline_transform(cell.baseline, size, params.flip)
    # 3. Phases (one, or two for two_phase), each with its own one-cycle schedule.
    # The kept weights are the best validation epoch of the *last* phase: a two-phase classifier has
    # always been through its real-only phase (else selection could return a phase-1, i.e. combined, model).
    best, epoch_number = (-1.0, 0, copy.deepcopy(model.state_dict())), 0
    for phase in phases(cell, settings, params):
        best = (-1.0, epoch_number, best[2])
        steps = sum(1 for _ in epoch_batches(phase, cell.strategy, n_real, n_syn, settings.batch_size, params,
                                             torch.Generator().manual_seed(0)))
        optimizer = make_optimizer(model, settings, phase.lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, phase.lr, total_steps=phase.epochs * steps + 1)
        for _ in range(phase.epochs):
            model.train()
            total, seen = 0.0, 0
            for batch in epoch_batches(phase, cell.strategy, n_real, n_syn, settings.batch_size, params, gen):
                loss = F.cross_entropy(model(augment_batch(pool[batch], transform)), y_pool[batch],
                                       label_smoothing=0.1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total, seen = total + loss.item() * len(batch), seen + len(batch)
            val_acc = accuracy(model, val_x, y_val)
            if val_acc > best[0]:
                best = (val_acc, epoch_number, copy.deepcopy(model.state_dict()))
            if on_epoch is not None:
                on_epoch(epoch_number, {"train_loss": total / max(1, seen), "val_acc": val_acc, "lr": phase.lr})
            epoch_number += 1
    # 4. The test split, once, with the best validation weights.
    model.load_state_dict(best[2])
    test_acc = accuracy(model, test_x, y_test)
    log.info("%s: best val %.3f at epoch %d, test %.3f", cell.name, best[0], best[1], test_acc)
    result = RunResult(cell.model, cell.baseline, cell.strategy, cell.seed, best[1], best[0], test_acc,
                       cell.synthetic_set)
    return result, model.eval()


@torch.no_grad()
def predict(model: torch.nn.Module, split: ImageSet, classes: list[str], image_size: int = 0) -> tuple[list[str], list[str]]:
    """(true labels, predicted labels) of a split, for a confusion matrix."""
    pixels = resize(split.pixels, image_size or split.pixels.shape[-1])
    model.eval()
    predicted = torch.cat([model(pixels[i : i + 512]).argmax(1) for i in range(0, len(pixels), 512)])
    return list(split.labels), [classes[i] for i in predicted.tolist()]


def stored_result(cell_dir: Path, fingerprint: str) -> RunResult | None:
    """The cell's result if it was trained with the same inputs, else None."""
    path = cell_dir / "result.json"
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    return RunResult(**stored["result"]) if stored.get("fingerprint") == fingerprint else None
