"""Train classifiers on real or real+synthetic images; choose the epoch on validation, test once."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from mvcaug.classifier import SmallCNN
from mvcaug.images import ImageSet, to_tensor
from mvcaug.params import TrainParams

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class RunResult:
    """One classifier: its setting, seed, best validation accuracy and the test accuracy there."""

    setting: str
    seed: int
    best_epoch: int
    val_acc: float
    test_acc: float


def load_synthetic(synthetic_dir: str | Path, channels: int) -> ImageSet:
    """The generated images listed in synthetic/manifest.parquet."""
    from PIL import Image

    folder = Path(synthetic_dir)
    rows = pq.read_table(folder / "manifest.parquet").to_pylist()
    pixels = torch.stack([to_tensor(Image.open(folder / r["path"]), channels) for r in rows])
    return ImageSet([r["path"] for r in rows], [r["label"] for r in rows], [""] * len(rows), pixels)


def training_set(setting: str, real: ImageSet, synthetic: ImageSet | None) -> ImageSet:
    """real: the real training split; real+synthetic: both, concatenated."""
    if setting == "real":
        return real
    if synthetic is None or not synthetic.ids:
        raise ValueError("setting real+synthetic needs synthetic images; run the generate stage")
    return ImageSet(real.ids + synthetic.ids, real.labels + synthetic.labels, real.sha256 + synthetic.sha256,
                    torch.cat([real.pixels, synthetic.pixels]))


def augmenter(size: int) -> v2.Transform:
    """The default augmentation: small random translations (no flips: digits and many classes are chiral)."""
    return v2.RandomCrop(size, padding=max(1, size // 8), padding_mode="edge")


@torch.no_grad()
def accuracy(model: torch.nn.Module, pixels: torch.Tensor, targets: torch.Tensor, batch: int = 512) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(pixels), batch):
        correct += (model(pixels[start : start + batch]).argmax(1) == targets[start : start + batch]).sum().item()
    return correct / max(1, len(pixels))


def train_one(
    setting: str,
    seed: int,
    train: ImageSet,
    val: ImageSet,
    test: ImageSet,
    classes: list[str],
    params: TrainParams,
    on_epoch: EpochCallback | None = None,
) -> RunResult:
    """Train for params.epochs; keep the weights of the best validation epoch; report their test accuracy."""
    torch.manual_seed(seed)
    index = {label: i for i, label in enumerate(classes)}
    y_train, y_val, y_test = (torch.tensor([index[l] for l in s.labels]) for s in (train, val, test))
    model = SmallCNN(train.pixels.shape[1], len(classes), params.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
    steps_per_epoch = -(-len(train.ids) // params.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, params.learning_rate, total_steps=params.epochs * steps_per_epoch
    )
    augment = augmenter(train.pixels.shape[-1])
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    for epoch in range(params.epochs):
        model.train()
        order = torch.randperm(len(train.ids))
        total = 0.0
        for start in range(0, len(order), params.batch_size):
            batch = order[start : start + params.batch_size]
            x = torch.stack([augment(img) for img in train.pixels[batch]])
            loss = F.cross_entropy(model(x), y_train[batch], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        val_acc = accuracy(model, val.pixels, y_val)
        if val_acc > best[0]:
            best = (val_acc, epoch, copy.deepcopy(model.state_dict()))
        if on_epoch is not None:
            on_epoch(epoch, {"train_loss": total / len(order), "val_acc": val_acc})
    model.load_state_dict(best[2])
    test_acc = accuracy(model, test.pixels, y_test)
    log.info("%s seed %d: best val %.3f at epoch %d, test %.3f", setting, seed, best[0], best[1], test_acc)
    return RunResult(setting, seed, best[1], best[0], test_acc)
