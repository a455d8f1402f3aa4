"""Train classifiers over the evaluation grid: model x augmentation baseline x strategy x seed.

Each cell is one classifier run with a digest of everything it is made from (its settings, its
data and its code), so a stored result is kept exactly while nothing it depends on changed: adding a
cell trains only that cell, changing one model's settings retrains only that model's cells. Model
selection uses the validation split only; the test split is scored once, with the best validation weights.

Besides the grid, cells answer three questions, all paired with the grid's cells by seed:
- the MVC ablation: combined cells trained on the set generated from P = Q = 0 embeddings (`unmixed`);
- the budget curve: combined cells with only the first k synthetic images per class;
- the real-data yardstick: `more_real` cells trained on the real training split plus k held-out real
  images per class (the `reference` split), at the same counts: what the same number of real images gives;
- the generator's own training data: `corpus` cells trained on the real training split plus k pretraining-corpus
  images per class, at the same counts: what the data behind the generator gives, added directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F

from mvcaug.judging.augment import BASELINES, BaselineAugmentation
from mvcaug.judging.cells import CONTROL_OF, CORPUS, MORE_REAL, REAL_TWO_PHASE, STRATEGIES, Cell, RunResult
from mvcaug.models.classifiers import classifier_kwargs
from mvcaug.io.classifiers import create_classifier
from mvcaug.io.digests import code_digest, json_digest
from mvcaug.data.images import ImageSet, resize
from mvcaug.core.devices import autocast, autocast_precision
from mvcaug.core.params import ModelSettings, Params, TrainParams
from mvcaug.data.synthetic_sets import MVC, synthetic_sets
from mvcaug.judging.strategies import Phase, epoch_batches, two_phase_plan

__all__ = ["CODE_ENTRIES", "TrainError", "TrainingData", "budget_counts", "plan_cells", "more_real_counts",
    "corpus_counts", "plan_stage_cells", "strategy_settings", "cell_digest", "make_optimizer", "fit_cell",
    "predict_classes", "stored_result", "CPU_THREADS", "cell_threads"]

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
TestCallback = Callable[[torch.Tensor], None]

CODE_ENTRIES = ("mvcaug.judging.train",)
"""The modules (with their import closure) whose code computes a cell's result."""
CODE_LIBRARIES = ("torch", "torchvision", "timm", "numpy")


CPU_THREADS = 1
"""torch threads a train-stage cell trains with on the CPU (cell_threads). With one, its sums run in one order
whatever the machine's core count, the runner or the number of worker processes, so a cell's result is the same
bits everywhere; the local runner fills the cores with one cell each instead (mvcaug.core.workers)."""


class TrainError(ValueError):
    """A cell cannot be trained on the data given (a bug in the caller, not a user error)."""


@dataclass
class TrainingData:
    """Every split in memory, the synthetic sets by name, and the class order shared by all cells."""

    real: ImageSet
    val: ImageSet
    test: ImageSet
    classes: list[str]
    synthetic: dict[str, ImageSet] = field(default_factory=dict)
    reference: ImageSet | None = None
    corpus: ImageSet | None = None
    """The pretraining corpus's images of the task's classes, for corpus cells."""

    def pool(self, cell: Cell) -> tuple[ImageSet, ImageSet | None]:
        """(the real images, the synthetic images) a cell trains on."""
        if cell.strategy == MORE_REAL:
            if self.reference is None or not self.reference.ids:
                raise TrainError(f"cell {cell.name} needs the reference split; set prepare.reference_per_class")
            return self.real.concat(self.reference.first_per_class(cell.added_per_class)), None
        if cell.strategy == CORPUS:
            if self.corpus is None or not self.corpus.ids:
                raise TrainError(f"cell {cell.name} needs the pretraining corpus; run the pretrain stage")
            return self.real.concat(self.corpus.first_per_class(cell.added_per_class)), None
        if not cell.uses_synthetic:
            return self.real, None
        synthetic = self.synthetic.get(cell.synthetic_set)
        if synthetic is None or not synthetic.ids:
            raise TrainError(f"cell {cell.name} needs synthetic images ({cell.synthetic_set}); run the generate stage")
        return self.real, (synthetic.first_per_class(cell.added_per_class) if cell.added_per_class else synthetic)


def budget_counts(fractions: Sequence[float], images_per_class: int) -> list[int]:
    """Images per class at each budget: round(fraction x images_per_class), at least 1, in increasing order."""
    return sorted({max(1, round(f * images_per_class)) for f in fractions})


def plan_cells(params: TrainParams, other_sets: Sequence[str] = (), budgets: Sequence[int] = (),
               images_per_class: int = 0, more_real: Sequence[int] = (), corpus: Sequence[int] = ()) -> list[Cell]:
    """The grid (full_grid: every baseline and strategy), then copies of the first baseline's combined cells
    on each other synthetic set in `other_sets` (unmixed: the MVC ablation; pretrained: Table 4), then the
    budget curve of the first baseline: combined cells at each budget below images_per_class (the full
    budget is the grid's combined cell), more_real cells at each count in `more_real` and corpus cells at
    each count in `corpus`. Each two_phase
    cell gets a control right after the grid: real only on the same two-phase schedule (REAL_TWO_PHASE)."""
    baselines = BASELINES if params.full_grid else params.baselines
    strategies = STRATEGIES if params.full_grid else params.strategies
    grid = [Cell(m, b, s, seed) for m in params.models for b in baselines for s in strategies for seed in params.seeds]
    cells = list(grid)
    cells += [replace(c, strategy=CONTROL_OF[c.strategy]) for c in grid if c.strategy in CONTROL_OF]
    first = [c for c in grid if c.baseline == baselines[0] and c.strategy == "combined"]
    cells += [replace(c, synthetic_set=name) for name in other_sets for c in first]
    cells += [replace(c, added_per_class=k) for k in budgets if k < images_per_class for c in first]
    cells += [Cell(m, baselines[0], MORE_REAL, seed, added_per_class=k)
              for k in more_real for m in params.models for seed in params.seeds]
    cells += [Cell(m, baselines[0], CORPUS, seed, added_per_class=k)
              for k in corpus for m in params.models for seed in params.seeds]
    return cells


def more_real_counts(params: Params) -> list[int]:
    """Real images added per class in the more_real cells: the budget counts, so each point of the synthetic budget
    curve has a real one at the same count; none without a reference split (prepare.reference_per_class 0), which
    is where those images come from (its size is checked at load to cover the largest count)."""
    if not params.prepare.reference_per_class:
        return []
    return budget_counts(params.train.synthetic_budgets, params.generate.images_per_class)


def corpus_counts(params: Params, retrieval_has_classes: bool) -> list[int]:
    """Images added per class in the corpus cells: the budget counts, when there is a corpus to add from: the real
    images of train.retrieval_folder (`retrieval_has_classes`: it holds class folders, which the caller looks up),
    else the glyph corpus the pretrain stage made (a class the corpus lacks is a clear error when it is read). An
    unlabeled pretraining folder names no class, so it gives no corpus cells."""
    if not retrieval_has_classes and params.pretrain.source != "glyphs":
        return []
    return budget_counts(params.train.synthetic_budgets, params.generate.images_per_class)


def plan_stage_cells(params: Params, retrieval_has_classes: bool) -> list[Cell]:
    """Every cell of the train stage, from the params alone and whether train.retrieval_folder holds class folders:
    the grid, the cells on each other synthetic set the run generates (the MVC ablation's, Table 4's), the budget
    curve, the more_real cells and the corpus cells. One plan for the flow and for every Dask worker, which must
    agree on it to read the same data."""
    t, g = params.train, params.generate
    others = [s.name for s in synthetic_sets(params.paths, g) if s.name != MVC]
    return plan_cells(t, other_sets=others, budgets=budget_counts(t.synthetic_budgets, g.images_per_class),
                      images_per_class=g.images_per_class, more_real=more_real_counts(params),
                      corpus=corpus_counts(params, retrieval_has_classes))


def strategy_settings(cell: Cell, params: TrainParams) -> dict:
    """The strategy params a cell's result depends on."""
    return {
        "combined": {"ratio": params.synthetic_ratio},
        "rsp": {"p": params.rsp_p},
        "two_phase": {"ratio": params.synthetic_ratio, "epochs": params.phase2_epochs,
                      "factor": params.phase2_lr_factor},
        REAL_TWO_PHASE: {"epochs": params.phase2_epochs, "factor": params.phase2_lr_factor},
    }.get(cell.strategy, {})


def cell_digest(cell: Cell, params: TrainParams, data_digest: str, synthetic_digests: Mapping[str, str],
                device: torch.device | None = None) -> str:
    """A hash of everything the cell's result depends on, and nothing else (so other cells stay): its
    identity, its model's settings and the precision they resolve to on `device` (the CPU by default; auto differs
    between devices), the torch threads it trains with there (CPU_THREADS on the CPU), its strategy's params, the
    real data, the one synthetic set it trains on (`synthetic_digests` maps each set to a digest of its images;
    "corpus" the pretraining corpus's images, for corpus cells) and the training code."""
    settings, device = params.model_settings[cell.model], device or torch.device("cpu")
    return json_digest({
        "cell": asdict(cell), "settings": asdict(settings), "flip": params.flip,
        "precision": autocast_precision(settings.mixed_precision, device),
        "threads": CPU_THREADS if device.type == "cpu" else None,
        "strategy": strategy_settings(cell, params), "data": data_digest,
        "synthetic": synthetic_digests[cell.synthetic_set] if cell.uses_synthetic else "",
        "code": code_digest(CODE_ENTRIES, CODE_LIBRARIES),
        **({"corpus": synthetic_digests[CORPUS]} if cell.strategy == CORPUS else {}),
    })


def phases(cell: Cell, settings: ModelSettings, params: TrainParams) -> list[Phase]:
    if cell.strategy in ("two_phase", REAL_TWO_PHASE):
        plan = two_phase_plan(settings.epochs, params.phase2_epochs, settings.learning_rate, params.phase2_lr_factor)
        # the control runs the same schedule on real images alone: its first phase sees no synthetic image
        return plan if cell.uses_synthetic else [replace(plan[0], use_synthetic=False), plan[1]]
    return [Phase(cell.strategy, settings.epochs, settings.learning_rate, cell.uses_synthetic)]


@contextmanager
def cell_threads(device: torch.device) -> Iterator[None]:
    """On the CPU, torch's intra-op threads set to CPU_THREADS while the block runs (this thread's, as torch keeps
    them per thread under OpenMP), then restored; elsewhere nothing changes (a GPU's sums do not follow them)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_optimizer(model: torch.nn.Module, settings: ModelSettings, lr: float) -> torch.optim.Optimizer:
    """The optimizer of settings.optimizer, in its foreach form (one call per step over all parameters, on the CPU
    too, where torch's default is a Python loop per tensor: the same arithmetic, bit for bit, measured on two
    cells, a real and a combined one)."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                               weight_decay=settings.weight_decay, foreach=True)
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=settings.weight_decay, foreach=True)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=settings.weight_decay, foreach=True)


def as_model_input(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on the model's device in channels_last, the layout fit_cell trains in: convolutions read it
    without a transpose (measured on 2 CPU cores: a training step of small_cnn 15-20% faster, its evaluation more)."""
    return pixels.to(device).contiguous(memory_format=torch.channels_last) if pixels.ndim == 4 else pixels.to(device)


@torch.inference_mode()
def predict_classes(model: torch.nn.Module, pixels: torch.Tensor, batch: int = 512, precision: str = "no") -> torch.Tensor:
    """Class indices (on the CPU) predicted for (n, C, H, W) pixels, in eval mode, on the model's device: the
    pixels stay where they are and move there batch by batch (under bf16 autocast for mixed_precision bf16)."""
    model.eval()
    if not len(pixels):
        return torch.zeros(0, dtype=torch.int64)
    device = next(model.parameters()).device
    with autocast(device, precision):
        return torch.cat([model(as_model_input(pixels[start : start + batch], device)).argmax(1).cpu()
                          for start in range(0, len(pixels), batch)])


def correct_fraction(predicted: torch.Tensor, targets: torch.Tensor) -> float:
    """The fraction of predicted class indices equal to the targets (an exact count, 0.0 for an empty split)."""
    return (predicted == targets).sum().item() / max(1, len(targets))


def accuracy(model: torch.nn.Module, pixels: torch.Tensor, targets: torch.Tensor, precision: str = "no") -> float:
    """The model's accuracy on a split (the validation one, each epoch)."""
    return correct_fraction(predict_classes(model, pixels, precision=precision), targets)


def fit_cell(
    cell: Cell, data: TrainingData, params: TrainParams, on_epoch: EpochCallback | None = None,
    device: torch.device | None = None, on_test: TestCallback | None = None,
) -> tuple[RunResult, torch.nn.Module]:
    """Train one cell; keep the weights of the best validation epoch of its last phase; report their
    test accuracy. Returns the result and the model with those weights (in eval mode). on_test receives the
    class indices those weights predict for the test split, the ones the accuracy counts (the train stage's
    confusion matrix: a second pass over the test split took 0.1 s a cell).

    The model trains on `device` (the CPU by default; a Dask worker's own GPU on a GPU machine): images stay
    in CPU memory and move a batch at a time, so a large pool need not fit on the GPU. Batches, seeds and
    augmentation draws are the same on every device. Weights and batches are channels_last while it trains (the
    returned model is back in the default layout, which safetensors stores); the model's settings.mixed_precision
    bf16 (or auto, on a device that computes bf16 natively) runs its forward passes under bfloat16 autocast."""
    device = device or torch.device("cpu")
    # 1. Inputs at the model's size, labels as indices, one seeded stream for everything random.
    settings = params.model_settings[cell.model]
    size = settings.image_size or data.real.pixels.shape[-1]
    torch.manual_seed(cell.seed)
    gen = torch.Generator().manual_seed(cell.seed)
    index = {label: i for i, label in enumerate(data.classes)}

    def targets(images: ImageSet) -> torch.Tensor:
        return torch.tensor([index[label] for label in images.labels], dtype=torch.int64)

    real, synthetic = data.pool(cell)
    parts = [real] + ([synthetic] if synthetic is not None else [])
    pool = resize(torch.cat([p.pixels for p in parts]), size)
    y_pool = torch.cat([targets(p) for p in parts])
    val_x, test_x = resize(data.val.pixels, size), resize(data.test.pixels, size)
    y_val, y_test = targets(data.val), targets(data.test)
    n_real, n_syn = len(real.ids), (len(synthetic.ids) if synthetic is not None else 0)
    ratio = None if params.synthetic_ratio < 0 else params.synthetic_ratio
    # 2. The model and its augmentation.
    model = create_classifier(cell.model, len(data.classes), pool.shape[1], settings.pretrained,
                              **classifier_kwargs(cell.model, settings)).to(device).to(memory_format=torch.channels_last)
    precision = autocast_precision(settings.mixed_precision, device)
    augment = BaselineAugmentation(cell.baseline, size, params.flip)
    # 3. Phases (one, or two for two_phase), each with its own one-cycle schedule. The kept weights are
    # the best validation epoch of the *last* phase: a two-phase classifier has always been through its
    # real-only phase (else selection could return a phase-1, i.e. combined, model).
    best, epoch_number = (-1.0, 0, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}), 0
    for phase in phases(cell, settings, params):
        best = (-1.0, epoch_number, best[2])
        steps = sum(1 for _ in epoch_batches(phase, cell.strategy, n_real, n_syn, settings.batch_size, params.rsp_p,
                                             ratio, torch.Generator().manual_seed(0)))
        optimizer = make_optimizer(model, settings, phase.lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, phase.lr, total_steps=phase.epochs * steps + 1)
        for _ in range(phase.epochs):
            model.train()
            total, seen = 0.0, 0
            lr_used = float(optimizer.param_groups[0]["lr"])  # read only: the schedule steps below, once a batch
            for batch in epoch_batches(phase, cell.strategy, n_real, n_syn, settings.batch_size, params.rsp_p,
                                       ratio, gen):
                images = as_model_input(augment(pool[batch]), device)
                with autocast(device, precision):
                    logits = model(images)
                loss = F.cross_entropy(logits.float(), y_pool[batch].to(device), label_smoothing=0.1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                lr_used = float(optimizer.param_groups[0]["lr"])  # the rate this step applies
                optimizer.step()
                schedule.step()
                total, seen = total + loss.item() * len(batch), seen + len(batch)
            val_acc = accuracy(model, val_x, y_val, precision)
            if val_acc > best[0]:
                best = (val_acc, epoch_number, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
            if on_epoch is not None:
                # lr: the rate the epoch's last step applied (the one-cycle schedule's), not the phase's peak
                on_epoch(epoch_number, {"train_loss": total / max(1, seen), "val_acc": val_acc, "lr": lr_used})
            epoch_number += 1
    # 4. The test split, once, with the best validation weights.
    model.load_state_dict(best[2])
    predicted = predict_classes(model, test_x, precision=precision)
    test_acc = correct_fraction(predicted, y_test)
    if on_test is not None:
        on_test(predicted)
    log.info("%s: best val %.3f at epoch %d, test %.3f", cell.name, best[0], best[1], test_acc)
    return RunResult(cell, best[1], best[0], test_acc), model.to(memory_format=torch.contiguous_format).eval()


def stored_result(record: Mapping | None, digest: str) -> RunResult | None:
    """The stored result if it was made from the same inputs, else None."""
    if not record or record.get("digest") != digest:
        return None
    try:
        return RunResult.from_json(record["result"])
    except (KeyError, TypeError, ValueError):  # a result stored in an older format
        return None
