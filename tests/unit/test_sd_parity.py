"""Parity with diffusers, on a tiny Stable Diffusion checkpoint: the maths that guard the GPU path.

Our sampler must equal `StableDiffusionInstructPix2PixPipeline`, our text encoding the pipeline's prompt
encoding, and one training step's loss the step of diffusers' `examples/instruct_pix2pix/
train_instruct_pix2pix.py` (same noise, timesteps and conditioning dropout), for epsilon and v-prediction
checkpoints. The widened `conv_in` gets random weights for the condition channels, so the conditioning
image changes the output and a mix-up of the concatenation order would show.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from mvcaug.models.denoiser import Denoiser
from mvcaug.method.embed import encode_texts, load_text_encoder
from mvcaug.method.finetune import build_denoiser, diffusion_loss
from mvcaug.core.params import EmbedParams, FinetuneParams
from mvcaug.io.model_sources import ModelError
from mvcaug.method.sampling import sample
from tests.sd_checkpoint import build_tiny_sd, instruct_pix2pix_pipeline, write_scheduler

CPU = torch.device("cpu")
TEXT_DIM, M, SIZE = 32, 77, 16


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd", cross_attention_dim=TEXT_DIM)


@pytest.fixture(scope="module")
def tiny_sd_v(tmp_path_factory, tiny_sd: Path) -> Path:
    """The same checkpoint with a v-prediction scheduler, as SD 2.x at 768 px ships it."""
    folder = tmp_path_factory.mktemp("sd-v") / "tiny-sd-v"
    shutil.copytree(tiny_sd, folder)
    write_scheduler(folder / "scheduler", "v_prediction")
    return folder


def denoiser_for(folder: Path, **changes) -> Denoiser:
    """The widened U-Net, with random weights on the condition channels of conv_in (zero after widening)."""
    params = FinetuneParams(init="pretrained", codec="vae", pretrained=str(folder), validation_every=0, **changes)
    denoiser = build_denoiser(params, channels=3, resolution=SIZE, text_dim=TEXT_DIM, device=CPU)
    with torch.no_grad():
        weight = denoiser.unet.conv_in.weight
        weight[:, 4:] = 0.3 * torch.randn(weight[:, 4:].shape, generator=torch.Generator().manual_seed(5))
    return denoiser


def inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(conditioning images in [-1, 1], text embeddings, null embedding, initial latent noise)."""
    g = torch.Generator().manual_seed(11)
    cond = torch.rand(batch, 3, SIZE, SIZE, generator=g) * 2 - 1
    text = torch.randn(batch, M, TEXT_DIM, generator=g)
    null = torch.randn(1, M, TEXT_DIM, generator=g)
    noise = torch.randn(batch, 4, SIZE // 2, SIZE // 2, generator=g)
    return cond, text, null, noise


@pytest.mark.parametrize(("guidance", "image_guidance"), [(7.5, 1.5), (2.0, 1.0)])
def test_our_sampler_equals_the_instruct_pix2pix_pipeline(tiny_sd: Path, guidance: float, image_guidance: float):
    """7.5 / 1.5: InstructPix2Pix's three-way guidance; 2.0 / 1.0: the paper's Eq. 6 (our two-branch form)."""
    denoiser = denoiser_for(tiny_sd)
    cond, text, null, noise = inputs()
    ours = sample(denoiser, cond, text, null, noise, "ddim", 4, guidance, image_guidance)
    theirs = instruct_pix2pix_pipeline(tiny_sd, denoiser)(
        image=cond * 0.5 + 0.5, prompt_embeds=text, negative_prompt_embeds=null.expand_as(text), latents=noise.clone(),
        num_inference_steps=4, guidance_scale=guidance, image_guidance_scale=image_guidance, output_type="pt",
    ).images
    difference = (ours * 0.5 + 0.5 - theirs).abs().max().item()
    assert difference < 1e-5, difference
    # the condition matters: another conditioning image gives other images
    other = sample(denoiser, cond.flip(0), text, null, noise, "ddim", 4, guidance, image_guidance)
    assert (other - ours).abs().max().item() > 1e-3


def test_our_text_encoding_equals_the_pipelines_prompt_encoding(tiny_sd: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = ["This is an image of a cat. A small grey cat on a sofa.", ""]
    params = EmbedParams(encoder=str(tiny_sd), subfolder="text_encoder", tokenizer_subfolder="tokenizer",
                         max_length=M, device="cpu")
    ours = encode_texts(load_text_encoder(params), prompts, batch_size=2)
    pipeline = instruct_pix2pix_pipeline(tiny_sd, denoiser_for(tiny_sd))
    with torch.no_grad():
        theirs = pipeline._encode_prompt(prompts, CPU, 1, False)
    assert ours.shape == (2, M, TEXT_DIM)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-6)


def reference_loss(denoiser: Denoiser, x: torch.Tensor, x_cond: torch.Tensor, text: torch.Tensor,
                   null: torch.Tensor, dropout: float, generator: torch.Generator) -> torch.Tensor:
    """One step of diffusers' train_instruct_pix2pix.py, line by line, with our order of random draws
    (target latents, the dropout draw, noise, timesteps) on one generator."""
    vae, unet, noise_scheduler = denoiser.codec.vae, denoiser.unet, denoiser.noise_scheduler
    latents = vae.encode(x).latent_dist.sample(generator) * vae.config.scaling_factor
    bsz = latents.shape[0]
    random_p = torch.rand(bsz, generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), generator=generator)
    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
    encoder_hidden_states = text
    original_image_embeds = vae.encode(x_cond).latent_dist.mode()
    # Conditioning dropout, as the script does it (its null text is the empty prompt's encoding).
    prompt_mask = (random_p < 2 * dropout).reshape(bsz, 1, 1)
    encoder_hidden_states = torch.where(prompt_mask, null.expand_as(text), encoder_hidden_states)
    image_mask = 1 - ((random_p >= dropout).to(x_cond.dtype) * (random_p < 3 * dropout).to(x_cond.dtype))
    original_image_embeds = image_mask.reshape(bsz, 1, 1, 1) * original_image_embeds
    concatenated_noisy_latents = torch.cat([noisy_latents, original_image_embeds], dim=1)
    if noise_scheduler.config.prediction_type == "epsilon":
        target = noise
    elif noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(noise_scheduler.config.prediction_type)
    model_pred = unet(concatenated_noisy_latents, timesteps, encoder_hidden_states).sample
    return F.mse_loss(model_pred.float(), target.float(), reduction="mean")


@pytest.mark.parametrize("checkpoint", ["tiny_sd", "tiny_sd_v"])
def test_one_training_step_equals_train_instruct_pix2pix(request, checkpoint: str):
    folder = request.getfixturevalue(checkpoint)
    dropout = 0.2  # the three conditioning cases each get p = 0.2, as the script's conditioning_dropout_prob
    denoiser = denoiser_for(folder, text_dropout=dropout, image_dropout=dropout, both_dropout=dropout)
    params = FinetuneParams(text_dropout=dropout, image_dropout=dropout, both_dropout=dropout)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, SIZE, SIZE, generator=g) * 2 - 1
    x_cond = torch.rand(8, 3, SIZE, SIZE, generator=g) * 2 - 1
    text, null = torch.randn(8, M, TEXT_DIM, generator=g), torch.randn(1, M, TEXT_DIM, generator=g)
    with torch.no_grad():
        ours = diffusion_loss(denoiser, denoiser.unet, x, x_cond, text, null, params, torch.Generator().manual_seed(3))
        theirs = reference_loss(denoiser, x, x_cond, text, null, dropout, torch.Generator().manual_seed(3))
    assert abs(ours.item() - theirs.item()) < 1e-6, (ours.item(), theirs.item())
    assert torch.isfinite(ours)


def test_v_prediction_trains_on_the_velocity_not_the_noise(tiny_sd: Path, tiny_sd_v: Path):
    """The same weights, draws and batch give another loss under a v-prediction schedule: the target is
    the velocity (diffusers' get_velocity), as the samplers, which read the same scheduler, expect."""
    g = torch.Generator().manual_seed(0)
    x, x_cond = torch.rand(4, 3, SIZE, SIZE, generator=g) * 2 - 1, torch.rand(4, 3, SIZE, SIZE, generator=g) * 2 - 1
    text, null = torch.randn(4, M, TEXT_DIM, generator=g), torch.zeros(1, M, TEXT_DIM)
    params = FinetuneParams(text_dropout=0.0, image_dropout=0.0, both_dropout=0.0)
    losses = {}
    for name, folder in (("epsilon", tiny_sd), ("v_prediction", tiny_sd_v)):
        denoiser = denoiser_for(folder)
        assert denoiser.noise_scheduler.config.prediction_type == name
        with torch.no_grad():
            losses[name] = diffusion_loss(denoiser, denoiser.unet, x, x_cond, text, null, params,
                                          torch.Generator().manual_seed(1)).item()
    assert abs(losses["epsilon"] - losses["v_prediction"]) > 1e-4, losses


def test_an_unsupported_prediction_type_is_refused_before_training(tiny_sd: Path, tmp_path: Path):
    folder = tmp_path / "tiny-sd-sample"
    shutil.copytree(tiny_sd, folder)
    write_scheduler(folder / "scheduler", "sample")
    with pytest.raises(ModelError, match=r"prediction_type is 'sample'; fine-tuning supports epsilon and "
                                          r"v_prediction: choose another checkpoint"):
        denoiser_for(folder)


def test_the_tiny_scheduler_is_laid_out_like_sd15s(tiny_sd: Path):
    scheduler = DDIMScheduler.from_pretrained(tiny_sd / "scheduler")
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.steps_offset == 1
    assert scheduler.config.prediction_type == "epsilon"  # SD 1.5 leaves it out: diffusers' default
