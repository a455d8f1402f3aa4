"""Index samplers for real + synthetic training: combined epochs, RSP batches, two-phase plans."""

from __future__ import annotations

import pytest
import torch

from mvcaug.judging.strategies import Phase, combined_epoch, epoch_batches, rsp_epoch, two_phase_plan


N_REAL, N_SYNTHETIC = 50, 200


def test_rsp_joins_each_real_batch_with_synthetic_images_included_with_probability_p():
    generator = torch.Generator().manual_seed(0)
    epochs = [list(rsp_epoch(N_REAL, N_SYNTHETIC, batch_size=8, p=0.8, generator=generator)) for _ in range(200)]
    for batches in epochs:
        real = torch.cat([b[b < N_REAL] for b in batches])
        assert torch.equal(real.sort().values, torch.arange(N_REAL))  # every real image once per epoch
        assert all((b >= N_REAL).sum() <= (b < N_REAL).sum() for b in batches)  # never more synthetic than real
    slots = torch.cat([b for batches in epochs for b in batches])
    synthetic = slots[slots >= N_REAL]
    # one candidate per real image, kept with p = 0.8: 0.8 synthetic per real image, not 4 (the pool's size)
    assert len(synthetic) / (200 * N_REAL) == pytest.approx(0.8, abs=0.02)
    assert synthetic.max() < N_REAL + N_SYNTHETIC and len(synthetic.unique()) == N_SYNTHETIC  # the whole pool


@pytest.mark.parametrize(("p", "synthetic_per_real"), [(0.0, 0.0), (1.0, 1.0)])
def test_rsp_extremes(p, synthetic_per_real):
    slots = torch.cat(list(rsp_epoch(N_REAL, N_SYNTHETIC, 32, p=p)))
    assert (slots >= N_REAL).sum().item() == synthetic_per_real * N_REAL


def test_rsp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="p must be"):
        next(rsp_epoch(N_REAL, N_SYNTHETIC, 8, p=1.5))
    with pytest.raises(ValueError, match="synthetic"):
        next(rsp_epoch(N_REAL, 0, 8, p=0.8))
    with pytest.raises(ValueError, match="real images"):
        next(rsp_epoch(0, N_SYNTHETIC, 8, p=0.8))


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


def test_an_rsp_epoch_has_as_many_batches_as_the_real_images_fill():
    generator = torch.Generator().manual_seed(0)
    phase = Phase("rsp", 3, 1e-3, True)
    rsp = list(epoch_batches(phase, "rsp", N_REAL, N_SYNTHETIC, 8, 0.8, None, generator))
    assert len(rsp) == -(-N_REAL // 8)  # the real images set the pace; the synthetic pool's size does not


@pytest.mark.parametrize(("phase2_epochs", "factor"), [(30, 0.1), (40, 0.1), (0, 0.1), (5, 1.0), (5, 0.0)])
def test_two_phase_plan_rejects_bad_settings(phase2_epochs, factor):
    with pytest.raises(ValueError):
        two_phase_plan(30, phase2_epochs, 1e-3, factor)
