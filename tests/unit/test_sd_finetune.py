"""The Stable Diffusion fine-tuning path on a tiny random SD checkpoint, and Accelerate's features:
pretrained init, accumulation, EMA, mixed precision, resumable checkpoints, validation grids."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from mvcaug.io.checkpoints import flatten_state, list_checkpoints, unflatten_state
from mvcaug.models.codecs import VaeCodec
from mvcaug.io.model_sources import ModelError
from mvcaug.method.finetune import (
    ClassConditions, ConditionSampler, build_denoiser, diffusion_loss, train_denoiser, validation_grid,
)
from mvcaug.core.errors import DeviceError
from mvcaug.core.params import FinetuneParams, MixParams
from tests.sd_checkpoint import build_tiny_sd

CPU = torch.device("cpu")
TEXT_DIM, M = 32, 6
SCRATCH = FinetuneParams(block_out_channels=(8, 16), attention_head_dim=4, batch_size=4, learning_rate=2e-3,
                         lr_warmup_steps=2, validation_every=0)
DIGESTS = {"data": "test-1"}


class Interrupt(Exception):
    """Stands for a crash or a kill in the middle of training."""


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd", cross_attention_dim=TEXT_DIM)


def sd_params(folder: Path | str, **changes) -> FinetuneParams:
    return FinetuneParams(init="pretrained", codec="vae", pretrained=str(folder), validation_every=0, **changes)


def two_classes(channels: int, size: int, text_dim: int) -> tuple[torch.Tensor, dict[str, ClassConditions]]:
    """Class a: a horizontal bar, class b: a vertical one; 4 random captions and mixes each."""
    g = torch.Generator().manual_seed(0)
    images = -torch.ones(8, channels, size, size)
    images[:4, :, size // 4: 3 * size // 4, :] = 1.0
    images[4:, :, :, size // 4: 3 * size // 4] = 1.0
    images = (images + 0.1 * torch.randn(images.shape, generator=g)).clamp(-1, 1)
    emb = np.random.default_rng(0).normal(size=(8, M, text_dim)).astype(np.float32)
    return images, {
        "a": ClassConditions(np.arange(4), emb[:4], emb[:4]),
        "b": ClassConditions(np.arange(4, 8), emb[4:], emb[4:]),
    }


def run_training(params: FinetuneParams, channels: int, size: int, text_dim: int, tmp: Path | None, on_step=None,
                 on_validation=None, digests=DIGESTS):
    """Train on the two bar classes; (losses, final state dict, steps seen by on_step)."""
    images, classes = two_classes(channels, size, text_dim)
    denoiser = build_denoiser(params, channels=channels, resolution=size, text_dim=text_dim, device=CPU)
    sampler = ConditionSampler(classes, MixParams(coarse_steps=1, fine_steps=2), "fresh", params.seed)
    seen = []

    def step_hook(step, loss):
        seen.append(step)
        if on_step is not None:
            on_step(step, loss)

    losses = train_denoiser(denoiser, images, sampler, np.zeros((M, text_dim), np.float32), params,
                            on_step=step_hook, on_validation=on_validation, checkpoint_dir=tmp, data_digests=digests)
    return losses, {k: v.clone() for k, v in denoiser.unet.state_dict().items()}, seen


def train_scratch(tmp: Path | None, on_step=None, on_validation=None, digests=DIGESTS, **changes):
    """A tiny pixel-space run on 8x8 images."""
    return run_training(dataclasses.replace(SCRATCH, **changes), 1, 8, 16, tmp, on_step, on_validation, digests)


def interrupt_at(index: int):
    def hook(step, loss):
        if step == index:
            raise Interrupt(step)
    return hook


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


# The tiny Stable Diffusion checkpoint and pretrained initialisation.

def test_tiny_sd_is_laid_out_like_stable_diffusion(tiny_sd):
    from transformers import AutoTokenizer, CLIPTextModel

    assert json.loads((tiny_sd / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    assert all((tiny_sd / part).is_dir() for part in ("unet", "vae", "scheduler", "text_encoder", "tokenizer"))
    assert not list(tiny_sd.rglob("*.bin")) and len(list(tiny_sd.rglob("*.safetensors"))) == 3
    tokenizer = AutoTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer")
    encoder = CLIPTextModel.from_pretrained(tiny_sd, subfolder="text_encoder", use_safetensors=True)
    ids = tokenizer(["This is an image of the digit 3."], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    assert tokenizer.model_max_length == 77 and ids.shape == (1, 77)
    with torch.no_grad():
        assert encoder(ids).last_hidden_state.shape == (1, 77, TEXT_DIM)
    vae = AutoencoderKL.from_pretrained(tiny_sd, subfolder="vae", use_safetensors=True)
    assert vae.config.scaling_factor == 0.18215 and vae.config.latent_channels == 4
    assert DDPMScheduler.from_pretrained(tiny_sd, subfolder="scheduler").config.beta_schedule == "scaled_linear"


@torch.no_grad()
def test_pretrained_init_keeps_the_pretrained_output_whatever_the_condition(tiny_sd):
    original = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet", use_safetensors=True).eval()
    original.conv_in.bias.add_(0.1)  # a dropped bias would show
    original.save_pretrained(tiny_sd.parent / "biased" / "unet")
    for part in ("vae", "scheduler"):
        (tiny_sd.parent / "biased" / part).symlink_to(tiny_sd / part)
    denoiser = build_denoiser(sd_params(tiny_sd.parent / "biased"), channels=3, resolution=16, text_dim=TEXT_DIM,
                              device=CPU)
    unet = denoiser.unet.eval()
    assert isinstance(denoiser.codec, VaeCodec)
    assert (denoiser.codec.latent_channels, denoiser.codec.downscale) == (4, 2)
    assert unet.config.in_channels == 8 and unet.config.out_channels == 4
    assert denoiser.noise_scheduler.config.beta_schedule == "scaled_linear"
    g = torch.Generator().manual_seed(0)
    images, _ = two_classes(3, 16, TEXT_DIM)
    z = denoiser.codec.encode_target(images[:2], g)
    text, t = torch.randn(2, M, TEXT_DIM, generator=g), torch.tensor([10, 900])
    expected = original(z, t, encoder_hidden_states=text).sample
    conditions = (torch.zeros_like(z), denoiser.codec.encode_condition(images[2:4]), 30 * torch.randn(z.shape, generator=g))
    for cond in conditions:
        got = unet(torch.cat([z, cond], 1), t, encoder_hidden_states=text).sample
        assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_vae_codec_takes_grayscale_and_gives_it_back(tiny_sd):
    denoiser = build_denoiser(sd_params(tiny_sd), channels=1, resolution=16, text_dim=TEXT_DIM, device=CPU)
    images, _ = two_classes(1, 16, TEXT_DIM)
    latents = denoiser.codec.encode_condition(images)
    assert latents.shape == (8, 4, 8, 8)
    assert denoiser.codec.decode(latents).shape == (8, 1, 16, 16)
    assert denoiser.codec.config()["channels"] == 1


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")
def test_missing_pretrained_folder_offline_names_it_and_the_fix(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    missing = tmp_path / "no-such-sd"
    for pretrained, named in [(str(missing), str(missing)), ("someone/not-cached-sd", "someone/not-cached-sd"),
                              ("", "finetune.pretrained is empty")]:
        with pytest.raises(ModelError) as err:
            build_denoiser(sd_params(pretrained), channels=3, resolution=16, text_dim=TEXT_DIM, device=CPU)
        message = str(err.value)
        assert named in message and "finetune.pretrained" in message and "Stable Diffusion folder" in message
        assert "HF_HUB_OFFLINE is set" in message or pretrained == ""


def test_embeddings_of_another_width_are_refused_with_the_fix(tiny_sd):
    with pytest.raises(ModelError, match="cross_attention_dim is 32.*text_encoder"):
        build_denoiser(sd_params(tiny_sd), channels=3, resolution=16, text_dim=16, device=CPU)


class FixedBatch(ConditionSampler):
    """Always the same (x, x', text): training overfits it."""

    def batch(self, size):
        return np.array([0, 5]), np.array([1, 4]), np.stack([self.classes["a"].mixed_embeddings[0],
                                                             self.classes["b"].mixed_embeddings[0]])


def test_sd_path_training_lowers_the_loss_on_a_fixed_batch(tiny_sd):
    params = sd_params(tiny_sd, steps=20, batch_size=2, learning_rate=1e-2, lr_warmup_steps=0,
                       gradient_accumulation_steps=2, ema=True, ema_decay=0.5, lr_scheduler="constant")
    denoiser = build_denoiser(params, channels=3, resolution=16, text_dim=TEXT_DIM, device=CPU)
    images, classes = two_classes(3, 16, TEXT_DIM)
    sampler = FixedBatch(classes, MixParams(), "table", seed=0)
    null = np.zeros((M, TEXT_DIM), np.float32)
    no_dropout = dataclasses.replace(params, text_dropout=0.0, image_dropout=0.0, both_dropout=0.0)

    @torch.no_grad()
    def fixed_loss() -> float:  # the same noise and timesteps every time
        targets, conds, texts = sampler.batch(2)
        loss = diffusion_loss(denoiser, denoiser.unet, images[targets], images[conds], torch.from_numpy(texts),
                              torch.from_numpy(null)[None], no_dropout, torch.Generator().manual_seed(1))
        return float(loss)

    before = fixed_loss()
    losses = train_denoiser(denoiser, images, sampler, null, params)
    after = fixed_loss()  # with the EMA weights, which the saved model gets
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert after < 0.7 * before, (before, after)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


# Accelerate features on the tiny scratch model.

def test_ema_changes_the_saved_weights_not_the_training():
    plain_losses, plain, _ = train_scratch(None, steps=6)
    ema_losses, averaged, _ = train_scratch(None, steps=6, ema=True, ema_decay=0.9)
    assert plain_losses == ema_losses
    assert any(not torch.allclose(plain[k], averaged[k]) for k in plain)


def test_gradient_checkpointing_gives_the_same_training():
    plain_losses, plain, _ = train_scratch(None, steps=3)
    checkpointed_losses, checkpointed, _ = train_scratch(None, steps=3, gradient_checkpointing=True)
    assert np.allclose(plain_losses, checkpointed_losses, atol=1e-6)
    assert_same_weights(plain, checkpointed)


def test_bf16_runs_on_cpu_and_fp16_is_refused():
    from accelerate.state import AcceleratorState

    with pytest.raises(DeviceError, match="fp16, which needs a GPU"):
        train_scratch(None, steps=1, mixed_precision="fp16")
    try:
        AcceleratorState._reset_state()  # the precision is process-wide state in Accelerate
        losses, _, _ = train_scratch(None, steps=2, mixed_precision="bf16")
        assert len(losses) == 2 and all(np.isfinite(losses))
    finally:
        AcceleratorState._reset_state()


# Checkpoints.

def test_optimizer_state_round_trips_without_pickle():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), betas=(0.8, 0.95))
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    structure, tensors = flatten_state(optimizer.state_dict())
    restored = unflatten_state(json.loads(json.dumps(structure)), tensors)
    assert restored["param_groups"][0]["betas"] == (0.8, 0.95)
    assert set(restored["state"]) == {0, 1}
    for key, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(restored["state"][0][key], value)
    with pytest.raises(TypeError, match="without pickle"):
        flatten_state({"fn": lambda: None})


def test_a_fresh_call_resumes_from_the_last_checkpoint(tmp_path):
    root = tmp_path / "checkpoints"
    with pytest.raises(Interrupt):
        train_scratch(root, on_step=interrupt_at(5), steps=10, checkpoint_every=3)  # 6 steps done
    assert [c.step for c in list_checkpoints(root)] == [6]  # the newest only
    folder = root / "step-000006"
    assert sorted(p.name for p in folder.iterdir()) == [
        "optimizer.json", "optimizer.safetensors", "scheduler.json", "state.json", "unet.safetensors"]
    state = json.loads((folder / "state.json").read_text())
    assert state["step"] == 6 and len(state["losses"]) == 6 and state["rng"][0]["sampler"]["bit_generator"] == "PCG64"
    losses, _, seen = train_scratch(root, steps=10, checkpoint_every=3)
    assert seen == [6, 7, 8, 9] and len(losses) == 10
    assert losses[:6] == state["losses"]


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    changes = dict(steps=8, checkpoint_every=3, ema=True, ema_decay=0.9, gradient_accumulation_steps=2)
    straight_losses, straight, _ = train_scratch(tmp_path / "straight", **changes)
    with pytest.raises(Interrupt):
        train_scratch(tmp_path / "resumed", on_step=interrupt_at(4), **changes)  # last checkpoint: step 3
    assert [c.step for c in list_checkpoints(tmp_path / "resumed")] == [3]
    losses, resumed, seen = train_scratch(tmp_path / "resumed", **changes)
    assert seen == [3, 4, 5, 6, 7]
    assert np.allclose(losses, straight_losses)
    assert_same_weights(straight, resumed)


def test_checkpoints_of_other_inputs_and_leftovers_are_not_resumed(tmp_path):
    root = tmp_path / "checkpoints"
    with pytest.raises(Interrupt):
        train_scratch(root, on_step=interrupt_at(2), steps=4, checkpoint_every=2)
    (root / ".tmp-step-000004-123").mkdir()  # a save cut short
    _, _, seen = train_scratch(root, steps=4, checkpoint_every=2, digests={"data": "test-2"})
    assert seen == [0, 1, 2, 3]
    assert [p.name for p in root.iterdir()] == ["step-000004"]  # the new run's
    assert len({c.meta["digest"] for c in list_checkpoints(root)}) == 1


# Validation grids.

def test_validation_grids_at_intervals_leave_training_unchanged():
    grids = []
    losses, weights, _ = train_scratch(None, steps=4)
    val_losses, val_weights, _ = train_scratch(
        None, steps=4, validation_every=2, validation_images=3, validation_steps=2, ema=False,
        on_validation=lambda step, images: grids.append((step, images)),
    )
    assert [step for step, _ in grids] == [2, 4]
    assert all(images.shape == (3, 1, 8, 8) and images.abs().max() <= 1 for _, images in grids)
    assert val_losses == losses
    assert_same_weights(weights, val_weights)
    grid = validation_grid(grids[0][1], columns=2)
    assert grid.size == (16, 16) and grid.mode == "L"


def test_finetune_task_logs_grids_and_removes_its_checkpoints(tmp_path, digits_prepared):
    from mvcaug.io.embedding_table import write_embeddings
    from mvcaug.io.images import read_manifest
    from mvcaug.core.params import Params, PathsParams, PrepareParams
    from tasks.finetune import finetune

    prepared, _ = digits_prepared
    train = [r for r in read_manifest(prepared).to_pylist() if r["split"] == "train"]
    rng = np.random.default_rng(0)
    emb = tmp_path / "emb"
    write_embeddings(emb / "embeddings.parquet", {"id": [r["id"] for r in train], "label": [r["label"] for r in train]},
                     rng.normal(size=(len(train), 4, 8)).astype(np.float32))
    write_embeddings(emb / "null.parquet", {"caption": [""]}, np.zeros((1, 4, 8), np.float32))
    labels = sorted({r["label"] for r in train})
    mixes = rng.normal(size=(len(labels), 4, 8)).astype(np.float32)
    write_embeddings(tmp_path / "mixed.parquet", {"label": labels}, mixes)
    model = tmp_path / "model"
    params = Params(
        paths=PathsParams(prepared=str(prepared), embeddings=str(emb), mixed=str(tmp_path / "mixed.parquet"),
                          model=str(model), run=str(tmp_path / "run")),
        prepare=PrepareParams(resolution=16, channels=1),
        finetune=dataclasses.replace(SCRATCH, steps=4, checkpoint_every=2, validation_every=2, validation_images=4,
                                     validation_steps=2),
    )
    metrics = finetune.fn(params)
    assert metrics["steps"] == 4
    assert (model / "unet" / "diffusion_pytorch_model.safetensors").is_file() and (model / "codec.json").is_file()
    grids = sorted(p.name for p in (model / "live" / "plots" / "images" / "validation").iterdir())
    assert grids == ["000002.png", "000004.png"]
    assert not (model / "checkpoints").exists()


# Several processes (`accelerate launch` on several GPUs takes the same path): two CPU processes over gloo.

def train_lora(folder: Path, tmp: Path, on_step=None, **changes):
    """A tiny LoRA run on the tiny SD checkpoint (RGB, 16 px)."""
    params = sd_params(folder, method="lora", lora_rank=4, lora_alpha=4.0, batch_size=2, lr_warmup_steps=0,
                       **changes)
    return run_training(params, 3, 16, TEXT_DIM, tmp, on_step)


def ddp_worker(out: Path, checkpoint: Path) -> None:
    """One rank: an uninterrupted run, an interrupted one and its resumption, full (scratch) and LoRA (the tiny
    SD checkpoint); writes what it saw."""
    from accelerate import PartialState

    state = PartialState(cpu=True)
    changes = dict(steps=4, checkpoint_every=2, ema=True, ema_decay=0.9, gradient_accumulation_steps=2)
    result = {"processes": state.num_processes}
    for kind, train in (("full", train_scratch), ("lora", lambda *a, **k: train_lora(checkpoint, *a, **k))):
        straight_losses, straight, _ = train(out / kind / "straight", **changes)
        try:
            train(out / kind / "resumed", on_step=interrupt_at(2), **changes)
        except Interrupt:
            pass
        losses, resumed, seen = train(out / kind / "resumed", **changes)
        result[kind] = {"seen": seen, "same_losses": losses == straight_losses,
                        "same_weights": all(torch.allclose(straight[k], resumed[k], atol=1e-6) for k in straight),
                        "digest": float(sum(v.double().sum() for v in resumed.values()))}
    (out / f"rank-{state.process_index}.json").write_text(json.dumps(result))


@pytest.mark.slow
def test_two_processes_train_checkpoint_and_resume_together(tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    checkpoint = build_tiny_sd(tmp_path / "tiny-sd", cross_attention_dim=TEXT_DIM)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "-m", "tests.unit.test_sd_finetune", str(tmp_path), str(checkpoint)]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{i}.json").read_text()) for i in range(2)]
    for kind in ("full", "lora"):
        for rank in ranks:
            seen = rank[kind]
            assert rank["processes"] == 2 and seen["seen"] == [2, 3] and seen["same_losses"] and seen["same_weights"]
        assert ranks[0][kind]["digest"] == ranks[1][kind]["digest"]  # DDP kept the replicas equal
        assert [c.step for c in list_checkpoints(tmp_path / kind / "resumed")] == [4]
        state = json.loads((tmp_path / kind / "resumed" / "step-000004" / "state.json").read_text())
        assert len(state["rng"]) == 2


if __name__ == "__main__":  # a rank of the test above
    import sys

    ddp_worker(Path(sys.argv[1]), Path(sys.argv[2]))


def test_training_images_go_through_the_vae_once_and_draw_what_the_vae_would(tiny_sd):
    from mvcaug.models.codecs import LatentCache

    params = sd_params(tiny_sd, steps=3, batch_size=4)
    denoiser = build_denoiser(params, channels=3, resolution=32, text_dim=TEXT_DIM, device=CPU)
    images, classes = two_classes(3, 32, TEXT_DIM)
    calls = []
    handle = denoiser.codec.vae.encoder.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    try:
        cache = LatentCache(denoiser.codec, images, batch_size=4)
        assert calls == [4, 4]  # every training image once, in batches
        indices = np.array([5, 0, 5, 2])
        z0 = cache.targets(indices, CPU, torch.Generator().manual_seed(3))
        expected = denoiser.codec.encode_target(images[indices], torch.Generator().manual_seed(3))
        assert torch.allclose(z0, expected, atol=1e-5)  # the same noise draw from the same distribution
        assert torch.allclose(cache.conditions(indices, CPU), denoiser.codec.encode_condition(images[indices]), atol=1e-5)
        calls.clear()
        sampler = ConditionSampler(classes, MixParams(coarse_steps=1, fine_steps=2), "fresh", params.seed)
        train_denoiser(denoiser, images, sampler, np.zeros((M, TEXT_DIM), np.float32), params)
        assert calls == [4, 4]  # 3 steps of 4 targets and 4 conditions: the encoder ran for the cache alone
    finally:
        handle.remove()
