"""LoRA fine-tuning (peft) on the tiny Stable Diffusion checkpoint: what trains, what is saved, resuming."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mvcaug.io.checkpoints import list_checkpoints
from mvcaug.io.models import load_denoiser, save_denoiser
from mvcaug.method.finetune import ClassConditions, ConditionSampler, build_denoiser, train_denoiser
from mvcaug.models.lora import UNET_WEIGHTS, WEIGHTS
from mvcaug.core.params import FinetuneParams, MixParams, ParamsError
from mvcaug.io.params_file import load_params
from mvcaug.method.sampling import sample
from tests.sd_checkpoint import build_tiny_sd

CPU = torch.device("cpu")
TEXT_DIM, M, SIZE = 32, 6, 16


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd", cross_attention_dim=TEXT_DIM)


def lora_params(folder: Path, **changes) -> FinetuneParams:
    base = FinetuneParams(init="pretrained", codec="vae", pretrained=str(folder), method="lora", lora_rank=4,
                          lora_alpha=4.0, steps=12, batch_size=4, learning_rate=5e-3, lr_warmup_steps=0,
                          lr_scheduler="constant", validation_every=0, text_dropout=0.0, image_dropout=0.0,
                          both_dropout=0.0)
    return dataclasses.replace(base, **changes)


def two_classes() -> tuple[torch.Tensor, ConditionSampler, np.ndarray]:
    """Class a: a horizontal bar, class b: a vertical one, RGB at 16 px; 4 captions each."""
    g = torch.Generator().manual_seed(0)
    images = -torch.ones(8, 3, SIZE, SIZE)
    images[:4, :, 4:12, :] = 1.0
    images[4:, :, :, 4:12] = 1.0
    images = (images + 0.1 * torch.randn(images.shape, generator=g)).clamp(-1, 1)
    emb = np.random.default_rng(0).normal(size=(8, M, TEXT_DIM)).astype(np.float32)
    classes = {"a": ClassConditions(np.arange(4), emb[:4], emb[:4]), "b": ClassConditions(np.arange(4, 8), emb[4:], emb[4:])}
    return images, ConditionSampler(classes, MixParams(), "table", seed=0), np.zeros((M, TEXT_DIM), np.float32)


def train(params: FinetuneParams, checkpoints: Path | None = None, on_step=None):
    images, sampler, null = two_classes()
    denoiser = build_denoiser(params, channels=3, resolution=SIZE, text_dim=TEXT_DIM, device=CPU)
    before = {k: v.clone() for k, v in denoiser.unet.state_dict().items()}
    losses = train_denoiser(denoiser, images, sampler, null, params, on_step=on_step, checkpoint_dir=checkpoints,
                            data_digests={"data": "lora-test"})
    return denoiser, before, losses


def test_only_the_adapters_and_conv_in_train_and_the_loss_drops(tiny_sd):
    denoiser, before, losses = train(lora_params(tiny_sd, steps=40))
    after = denoiser.unet.state_dict()
    changed = {name for name in after if not torch.equal(before[name], after[name])}
    assert changed and all("lora_" in name or name.startswith("conv_in.") for name in changed), sorted(changed)[:5]
    assert any("lora_B" in name for name in changed) and "conv_in.weight" in changed
    trained = sum(p.numel() for p in denoiser.unet.parameters() if p.requires_grad)
    assert trained < 0.5 * sum(p.numel() for p in denoiser.unet.parameters())
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_saved_adapters_load_back_to_identical_images(tiny_sd, tmp_path):
    denoiser, _, _ = train(lora_params(tiny_sd))
    save_denoiser(denoiser, tmp_path / "model")
    unet_folder = tmp_path / "model" / "unet"
    # diffusers' layout: the U-Net without adapters (conv_in as trained) and the adapters in their LoRA file
    assert sorted(p.name for p in unet_folder.iterdir()) == sorted(["config.json", UNET_WEIGHTS, WEIGHTS])
    assert (unet_folder / WEIGHTS).stat().st_size < 0.5 * (unet_folder / UNET_WEIGHTS).stat().st_size
    (tiny_sd / "unet").rename(tiny_sd / "unet.moved")  # the U-Net is loaded from the model folder, not the base
    try:
        loaded = load_denoiser(tmp_path / "model", CPU)
    finally:
        (tiny_sd / "unet.moved").rename(tiny_sd / "unet")
    assert not any("lora_" in name for name in loaded.unet.state_dict())  # merged into the weights
    g = torch.Generator().manual_seed(4)
    cond = torch.rand(2, 3, SIZE, SIZE, generator=g) * 2 - 1
    text, null = torch.randn(2, M, TEXT_DIM, generator=g), torch.zeros(1, M, TEXT_DIM)
    noise = torch.randn(2, 4, SIZE // 2, SIZE // 2, generator=g)
    denoiser.unet.eval()
    ours = sample(denoiser, cond, text, null, noise, "ddim", 3, 2.0)
    again = sample(loaded, cond, text, null, noise, "ddim", 3, 2.0)  # adapters merged into the base weights
    assert (ours - again).abs().max().item() < 1e-5


def test_an_interrupted_lora_run_resumes_to_the_same_weights(tiny_sd, tmp_path):
    params = lora_params(tiny_sd, steps=8, checkpoint_every=3, ema=True, ema_decay=0.9)
    straight, _, straight_losses = train(params, tmp_path / "straight")

    def stop_at_4(step, loss):
        if step == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(params, tmp_path / "resumed", on_step=stop_at_4)
    assert [c.step for c in list_checkpoints(tmp_path / "resumed")] == [3]
    resumed, _, losses = train(params, tmp_path / "resumed")
    assert np.allclose(losses, straight_losses)
    for name, tensor in straight.unet.state_dict().items():
        assert torch.allclose(tensor, resumed.unet.state_dict()[name], atol=1e-6), name


def test_lora_needs_a_pretrained_u_net(tmp_path):
    (tmp_path / "params.yaml").write_text("finetune:\n  method: lora\n")
    with pytest.raises(ParamsError, match=r"'finetune.method: lora' adapts a pretrained U-Net: it needs finetune.init: pretrained"):
        load_params(tmp_path / "params.yaml")
