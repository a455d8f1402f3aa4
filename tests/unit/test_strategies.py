"""Index samplers for real + synthetic training: combined epochs, RSP batches, two-phase plans."""

from __future__ import annotations

import pytest
import torch

from mvcaug.strategies import Phase, combined_epoch, epoch_batches, rsp_batches, two_phase_plan


N_REAL, N_SYNTHETIC = 50, 200


def test_rsp_synthetic_share_is_p():
    generator = torch.Generator().manual_seed(0)
    batches = list(rsp_batches(N_REAL, N_SYNTHETIC, batch_size=100, steps=200, p=0.8, generator=generator))
    assert len(batches) == 200 and all(b.shape == (100,) for b in batches)
    slots = torch.cat(batches)
    assert slots.min() >= 0 and slots.max() < N_REAL + N_SYNTHETIC
    assert (slots >= N_REAL).float().mean().item() == pytest.approx(0.8, abs=0.02)
    # both sources are sampled across their whole range
    assert len(slots[slots < N_REAL].unique()) == N_REAL
    assert len(slots[slots >= N_REAL].unique()) == N_SYNTHETIC


@pytest.mark.parametrize(("p", "real_only"), [(0.0, True), (1.0, False)])
def test_rsp_extremes(p, real_only):
    slots = torch.cat(list(rsp_batches(N_REAL, N_SYNTHETIC, 32, 10, p=p)))
    assert bool((slots < N_REAL).all()) is real_only and bool((slots >= N_REAL).all()) is not real_only


def test_rsp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="p must be"):
        next(rsp_batches(N_REAL, N_SYNTHETIC, 8, 1, p=1.5))
    with pytest.raises(ValueError, match="synthetic"):
        next(rsp_batches(N_REAL, 0, 8, 1, p=0.8))


@pytest.mark.parametrize(("ratio", "expected"), [(0.5, 25), (1.0, 50), (4.0, 200), (None, 200), (-1, 200),
                                                 (0.0, 0)])
def test_combined_epoch_has_all_real_and_distinct_synthetic(ratio, expected):
    epoch = combined_epoch(N_REAL, N_SYNTHETIC, ratio, torch.Generator().manual_seed(1))
    real, synthetic = epoch[epoch < N_REAL], epoch[epoch >= N_REAL]
    assert torch.equal(real.sort().values, torch.arange(N_REAL))
    assert len(synthetic) == expected and len(synthetic.unique()) == expected
    assert epoch.max() < N_REAL + N_SYNTHETIC
    assert not torch.equal(epoch[:N_REAL], torch.arange(N_REAL))  # shuffled, not real-then-synthetic


def test_combined_epoch_is_reproducible_and_rejects_too_large_ratios():
    first = combined_epoch(N_REAL, N_SYNTHETIC, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(first, combined_epoch(N_REAL, N_SYNTHETIC, 1.0, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="ratio"):
        combined_epoch(N_REAL, N_SYNTHETIC, 4.5)


def test_two_phase_plan_ends_on_real_images_at_a_lower_rate():
    plan = two_phase_plan(epochs=30, phase2_epochs=5, lr=1e-3, phase2_lr_factor=0.1)
    first, second = plan
    assert first == Phase("combined", 30, 1e-3, True)
    assert second.epochs == 5 < first.epochs and not second.use_synthetic
    assert second.lr == pytest.approx(1e-4)
    generator = torch.Generator().manual_seed(0)
    phase2 = torch.cat(list(epoch_batches(second, "two_phase", N_REAL, N_SYNTHETIC, 7, 0.8, 1.0, generator)))
    assert torch.equal(phase2.sort().values, torch.arange(N_REAL))  # phase 2: the real images, once each
    phase1 = torch.cat(list(epoch_batches(first, "two_phase", N_REAL, N_SYNTHETIC, 7, 0.8, 1.0, generator)))
    assert (phase1 >= N_REAL).sum() == N_REAL  # phase 1: ratio 1.0, as many synthetic as real images


def test_an_rsp_epoch_has_as_many_batches_as_a_combined_one():
    generator = torch.Generator().manual_seed(0)
    phase = Phase("rsp", 3, 1e-3, True)
    rsp = list(epoch_batches(phase, "rsp", N_REAL, N_SYNTHETIC, 8, 0.8, None, generator))
    combined = list(epoch_batches(Phase("combined", 3, 1e-3, True), "combined", N_REAL, N_SYNTHETIC, 8, 0.8, None,
                                  generator))
    assert len(rsp) == len(combined) == -(-(N_REAL + N_SYNTHETIC) // 8)
    assert all(len(batch) == 8 for batch in rsp)  # RSP batches are full: slots are drawn with replacement


@pytest.mark.parametrize(("phase2_epochs", "factor"), [(30, 0.1), (40, 0.1), (0, 0.1), (5, 1.0), (5, 0.0)])
def test_two_phase_plan_rejects_bad_settings(phase2_epochs, factor):
    with pytest.raises(ValueError):
        two_phase_plan(30, phase2_epochs, 1e-3, factor)
