"""The Stable Diffusion path on a tiny checkpoint: CLIP embeddings from its subfolders, generation from
a fine-tuned latent model at the working resolution, and the pretrained-only text-to-image mode."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mvcaug.method.embed import encode_texts, load_text_encoder
from mvcaug.method.finetune import build_denoiser
from mvcaug.method.generate import GenerationInputs, Shard
from mvcaug.data.images import ImageSet
from mvcaug.core.params import EmbedParams, FinetuneParams, GenerateParams
from mvcaug.models.denoiser import takes_image_condition
from mvcaug.io.models import load_text_to_image
from tasks.generate import store_shard as generate_shard
from tests.sd_checkpoint import build_tiny_sd

TEXT_DIM = 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd"), cross_attention_dim=TEXT_DIM)


def test_clip_embeddings_from_checkpoint_subfolders(checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = EmbedParams(encoder=str(checkpoint), subfolder="text_encoder", tokenizer_subfolder="tokenizer",
                         max_length=77, device="cpu")
    encoder = load_text_encoder(params)
    embeddings = encode_texts(encoder, ["this is an image of a cat", ""], batch_size=2)
    assert embeddings.shape == (2, 77, TEXT_DIM)  # the checkpoint's m x d, matching its cross-attention
    assert not np.allclose(embeddings[0], embeddings[1])


def inputs_for(denoiser, channels: int, working: int, tmp_seed: int = 0) -> GenerationInputs:
    rng = np.random.default_rng(tmp_seed)
    pixels = torch.from_numpy(rng.uniform(-1, 1, (4, channels, working, working)).astype(np.float32))
    images = ImageSet(["a0", "a1", "b0", "b1"], ["a", "a", "b", "b"], ["s0", "s1", "s2", "s3"], pixels)
    mixed = {label: rng.normal(size=(3, 77, TEXT_DIM)).astype(np.float32) for label in ("a", "b")}
    return GenerationInputs(
        denoiser=denoiser, model_digest="tiny", cond_images=images,
        mixed_ids={label: [f"{label}-mix{i}" for i in range(3)] for label in mixed}, mixed=mixed,
        null_text=np.zeros((77, TEXT_DIM), np.float32), resolution=working,
        params=GenerateParams(images_per_class=3, shard_size=3, steps=2, batch_size=2, scheduler="dpmsolver++",
                              guidance_scale=7.5, image_guidance_scale=1.5),
    )


def test_finetuned_latent_model_generates_at_working_resolution(checkpoint: Path, tmp_path: Path) -> None:
    params = FinetuneParams(init="pretrained", pretrained=str(checkpoint), codec="vae")
    denoiser = build_denoiser(params, channels=3, resolution=16, text_dim=TEXT_DIM, device=torch.device("cpu"))
    assert takes_image_condition(denoiser) and denoiser.unet.config.sample_size == 8
    inputs = inputs_for(denoiser, channels=3, working=12)
    rows, generated = generate_shard(Shard("a", 0, 0, 3), inputs, tmp_path)
    assert generated and len(rows) == 3
    for row in rows:
        assert row["cond_id"] in {"a0", "a1"}
        with Image.open(tmp_path / row["path"]) as image:
            assert image.size == (12, 12) and image.mode == "RGB"  # model at 16 px, written at 12 px


def test_pretrained_only_text_to_image(checkpoint: Path, tmp_path: Path) -> None:
    denoiser = load_text_to_image(str(checkpoint), torch.device("cpu"))
    assert not takes_image_condition(denoiser)
    inputs = inputs_for(denoiser, channels=3, working=16)
    inputs.params = replace(inputs.params, mode="pretrained")
    rows, generated = generate_shard(Shard("b", 0, 0, 3), inputs, tmp_path)
    assert generated and [r["cond_id"] for r in rows] == ["", "", ""]  # no image conditioning
    pixels = [np.asarray(Image.open(tmp_path / r["path"])) for r in rows]
    assert all(p.shape == (16, 16, 3) for p in pixels)
    assert not np.array_equal(pixels[0], pixels[1])  # different seeds, different images
