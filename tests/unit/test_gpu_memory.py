"""The peak-memory estimate before fine-tuning, and the knobs that lower it, on a small real U-Net (CPU)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mvcaug.models.denoiser import build_scratch_unet
from mvcaug.method.finetune import ClassConditions, ConditionSampler, train_denoiser
from mvcaug.models.gpu_memory import GIB, activation_bytes_per_sample, check_fits, estimate_peak_memory
from mvcaug.core.errors import DeviceError
from mvcaug.core.params import FinetuneParams, MixParams

TEXT = (6, 16)
PARAMS = FinetuneParams(block_out_channels=(16, 32), attention_head_dim=4, batch_size=8, validation_every=0)


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_scratch_unet(3, 16, TEXT[1], PARAMS)


def estimate(unet, **changes):
    return estimate_peak_memory(unet, [], dataclasses.replace(PARAMS, **changes), (6, 16, 16), TEXT)


def test_the_parts_add_up_and_follow_the_knobs(unet):
    n = sum(p.numel() for p in unet.parameters())
    adamw = estimate(unet)
    assert adamw.weights == 4 * n and adamw.gradients == 4 * n and adamw.optimizer == 8 * n and adamw.ema == 0
    assert adamw.total == sum(dataclasses.astuple(adamw))
    assert estimate(unet, ema=True).ema == 4 * n
    assert estimate(unet, ema=True, ema_device="cpu").ema == 0
    assert estimate(unet, optimizer="adafactor").optimizer < adamw.optimizer / 2
    # activations are measured per sample and scale with the batch
    assert estimate(unet, batch_size=16).activations == 2 * adamw.activations > 0


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_the_optimizer_state_is_what_the_optimizer_allocates(unet, optimizer):
    from mvcaug.method.finetune import make_optimizer
    from mvcaug.models.gpu_memory import optimizer_state_bytes

    copy = build_scratch_unet(3, 16, TEXT[1], PARAMS)
    optim = make_optimizer(copy.parameters(), dataclasses.replace(PARAMS, optimizer=optimizer))
    for p in copy.parameters():
        p.grad = torch.ones_like(p)
    optim.step()
    allocated = sum(v.numel() * v.element_size() for state in optim.state.values() for k, v in state.items()
                    if torch.is_tensor(v) and v.dim() > 0)
    assert optimizer_state_bytes(list(copy.parameters()), optimizer) == allocated


def test_checkpointing_and_bf16_lower_the_measured_activations(unet):
    plain = activation_bytes_per_sample(unet, (6, 16, 16), TEXT, "no", False)
    assert activation_bytes_per_sample(unet, (6, 16, 16), TEXT, "no", True) < plain
    assert activation_bytes_per_sample(unet, (6, 16, 16), TEXT, "bf16", False) < plain
    # a larger image saves more
    assert activation_bytes_per_sample(unet, (6, 32, 32), TEXT, "no", False) > 3 * plain
    assert not getattr(unet, "is_gradient_checkpointing", False)  # the measurement leaves the module as it was


def test_a_run_that_cannot_fit_stops_naming_the_knobs(unet):
    needed = estimate(unet)
    check_fits(needed, needed.total + 2 * GIB, "a big GPU")  # fits: nothing raised
    with pytest.raises(DeviceError, match=r"fine-tuning needs about .* GiB \(weights .*\) but a small GPU has "
                                          r".*finetune\.batch_size.*gradient_checkpointing.*ema_device: cpu"
                                          r".*optimizer: adafactor"):
        check_fits(needed, needed.total + GIB // 2, "a small GPU")


def two_classes() -> tuple[torch.Tensor, ConditionSampler, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    images = -torch.ones(8, 1, 8, 8)
    images[:4, :, 2:6, :] = 1.0
    images[4:, :, :, 2:6] = 1.0
    images = (images + 0.1 * torch.randn(images.shape, generator=g)).clamp(-1, 1)
    emb = np.random.default_rng(0).normal(size=(8, 4, 16)).astype(np.float32)
    classes = {"a": ClassConditions(np.arange(4), emb[:4], emb[:4]), "b": ClassConditions(np.arange(4, 8), emb[4:], emb[4:])}
    return images, ConditionSampler(classes, MixParams(), "table", seed=0), np.zeros((4, 16), np.float32)


@pytest.mark.parametrize("changes", [{"optimizer": "adafactor"}, {"ema": True, "ema_decay": 0.9, "ema_device": "cpu"}])
def test_the_memory_saving_options_train(changes):
    from mvcaug.method.finetune import build_denoiser

    params = FinetuneParams(block_out_channels=(8, 16), attention_head_dim=4, batch_size=4, learning_rate=3e-3,
                            lr_warmup_steps=0, steps=30, lr_scheduler="constant", validation_every=0, **changes)
    images, sampler, null = two_classes()
    denoiser = build_denoiser(params, channels=1, resolution=8, text_dim=16, device=torch.device("cpu"))
    before = {k: v.clone() for k, v in denoiser.unet.state_dict().items()}
    losses = train_denoiser(denoiser, images, sampler, null, params)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert any(not torch.equal(before[k], v) for k, v in denoiser.unet.state_dict().items())


def test_the_optimizer_steps_temporaries_are_counted_beside_its_state():
    from mvcaug.method.finetune import adamw_kernel
    from mvcaug.models.gpu_memory import optimizer_step_bytes

    parameters = [torch.nn.Parameter(torch.zeros(6, 5)), torch.nn.Parameter(torch.zeros(7))]
    assert optimizer_step_bytes(parameters, "adamw", fused=False) == 4 * 37  # foreach: one list as large as the weights
    assert optimizer_step_bytes(parameters, "adamw", fused=True) == 0
    assert optimizer_step_bytes(parameters, "adafactor", fused=True) == 3 * 4 * 30  # a weight at a time
    # fine-tuning runs AdamW fused where the estimate is made (CUDA), foreach on the CPU
    assert adamw_kernel(torch.device("cuda", 0)) == {"fused": True} and adamw_kernel(torch.device("cpu")) == {}
