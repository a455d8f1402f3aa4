"""How synthetic images enter classifier training, as index samplers.

The training set is the real images (indices 0 .. n_real - 1) followed by the synthetic ones
(n_real .. n_real + n_synthetic - 1), so every strategy is a way to draw indices into it:

- combined: each epoch sees every real image once plus a fresh random subset of synthetic images;
- RSP (random selection with probability, the paper's reading): each batch of real images is joined by
  synthetic images from the pool, one candidate per real image, each included with probability p, so
  synthetic images never outnumber real ones, however many there are;
- two-phase: train on the combined set, then fine-tune on real images only, for fewer epochs at a
  lower learning rate, so the classifier ends calibrated to the real distribution.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["combined_epoch", "rsp_epoch", "Phase", "two_phase_plan", "epoch_batches"]

def combined_epoch(
    n_real: int, n_synthetic: int, ratio: float | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One shuffled epoch: every real index once, plus round(ratio * n_real) distinct synthetic ones.

    Args:
        n_real: Real images, at indices 0 .. n_real - 1.
        n_synthetic: Synthetic images, at indices n_real .. n_real + n_synthetic - 1.
        ratio: Synthetic images per real image this epoch; None or negative for all of them.
        generator: Source of randomness, for reproducible epochs.

    Raises:
        ValueError: When ratio asks for more synthetic images than exist, or counts are negative.
    """
    _check_counts(n_real, n_synthetic)
    if ratio is None or ratio < 0:
        count = n_synthetic
    else:
        if ratio * n_real > n_synthetic * (1 + 1e-9):
            limit = n_synthetic / n_real if n_real else 0.0
            raise ValueError(
                f"ratio {ratio} needs {ratio * n_real:g} synthetic images but there are {n_synthetic} "
                f"(at most ratio {limit:g} for {n_real} real images)"
            )
        count = min(round(ratio * n_real), n_synthetic)
    synthetic = n_real + torch.randperm(n_synthetic, generator=generator)[:count]
    indices = torch.cat([torch.arange(n_real), synthetic])
    return indices[torch.randperm(len(indices), generator=generator)]


def rsp_epoch(
    n_real: int,
    n_synthetic: int,
    batch_size: int,
    p: float = 0.8,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """One epoch of the paper's RSP: the real images in shuffled batches of `batch_size`, each batch joined
    by synthetic images drawn from the pool, one candidate per real image, each included with probability p.

    The paper "randomly select[s] synthetic images with a specified probability (e.g. 80%) from a pool of
    synthetic datasets and integrat[es] them with batches from the real dataset" to keep the synthetic
    images from dominating: here a batch holds at most as many synthetic images as real ones (p of them
    on average), however large the pool. (Drawing every batch slot from the synthetic pool with
    probability p, as an earlier version did, lets a 4x pool outweigh the real images 4 to 1: nearly the
    combined strategy sampled with replacement.)

    Raises:
        ValueError: For p outside [0, 1], a non-positive batch size, no real images, or no synthetic images
            when p > 0.
    """
    _check_counts(n_real, n_synthetic)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"RSP probability p must be in [0, 1], got {p}")
    if batch_size < 1:
        raise ValueError(f"need batch_size >= 1, got {batch_size}")
    if n_real == 0:
        raise ValueError("RSP joins synthetic images to batches of real ones: it needs real images, got none")
    if p > 0 and n_synthetic == 0:
        raise ValueError(f"RSP with p={p} needs synthetic images, got none")
    for real in torch.randperm(n_real, generator=generator).split(batch_size):
        candidates = n_real + torch.randint(max(n_synthetic, 1), (len(real),), generator=generator)
        included = torch.rand(len(real), generator=generator) < p
        yield torch.cat([real, candidates[included]])


@dataclass(frozen=True)
class Phase:
    """One stage of a training plan: how long, at which peak learning rate, and on which images."""

    name: str
    epochs: int
    lr: float
    use_synthetic: bool


def two_phase_plan(epochs: int, phase2_epochs: int, lr: float, phase2_lr_factor: float) -> list[Phase]:
    """Phase 1: `epochs` epochs on real + synthetic at `lr`; phase 2: `phase2_epochs` (fewer) epochs
    on real images only at `lr * phase2_lr_factor`.

    Raises:
        ValueError: When phase2_epochs is not in [1, epochs), or the factor is not in (0, 1).
    """
    if epochs < 1 or not 1 <= phase2_epochs < epochs:
        raise ValueError(f"phase 2 needs 1 <= phase2_epochs < epochs, got {phase2_epochs} and {epochs}")
    if not 0.0 < phase2_lr_factor < 1.0:
        raise ValueError(f"phase2_lr_factor must be in (0, 1), got {phase2_lr_factor}")
    return [
        Phase("combined", epochs, lr, use_synthetic=True),
        Phase("real_finetune", phase2_epochs, lr * phase2_lr_factor, use_synthetic=False),
    ]


def epoch_batches(
    phase: Phase, strategy: str, n_real: int, n_synthetic: int, batch_size: int, rsp_p: float,
    synthetic_ratio: float | None, generator: torch.Generator,
) -> Iterator[torch.Tensor]:
    """Index batches into [real; synthetic] for one epoch of a phase: RSP draws batches slot by slot,
    combined takes every real image and a synthetic subset (`synthetic_ratio`, None = all), a phase
    without synthetic images shuffles the real ones. An RSP epoch has as many batches as the real images fill."""
    if strategy == "rsp" and phase.use_synthetic:
        yield from rsp_epoch(n_real, n_synthetic, batch_size, rsp_p, generator)
        return
    if phase.use_synthetic:
        order = combined_epoch(n_real, n_synthetic, synthetic_ratio, generator)
    else:
        _check_counts(n_real, n_synthetic)
        order = torch.randperm(n_real, generator=generator)
    yield from order.split(batch_size)


def _check_counts(n_real: int, n_synthetic: int) -> None:
    if n_real < 0 or n_synthetic < 0:
        raise ValueError(f"image counts must be >= 0, got {n_real} real and {n_synthetic} synthetic")
