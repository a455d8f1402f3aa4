"""What `finetune` writes loads in stock diffusers.

The finetune task fine-tunes the tiny Stable Diffusion checkpoint (full, and LoRA) on the bundled digits;
`StableDiffusionInstructPix2PixPipeline.from_pretrained(<paths.model>)` (plus `load_lora_weights` for
LoRA) must then give the images this product's generation gives from the same folder. The folder also
carries a model card with no date in it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline
from safetensors import safe_open

from mvcaug.io.models import load_denoiser
from mvcaug.io.digests import json_digest
from mvcaug.method.finetune import build_denoiser
from mvcaug.models.lora import WEIGHTS
from mvcaug.core.params import FinetuneParams, Params, PathsParams, PrepareParams
from mvcaug.method.sampling import sample
from tasks.finetune import card_facts, data_digests, finetune, save_model
from tests.sd_checkpoint import build_tiny_sd

CPU = torch.device("cpu")
TEXT_DIM, M, SIZE = 32, 8, 16


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd", cross_attention_dim=TEXT_DIM)


def task_params(tmp: Path, prepared: Path, tuning: FinetuneParams, text_dim: int = TEXT_DIM) -> Params:
    """The finetune task on the digits (grayscale, 16 px) with random embeddings of width `text_dim`."""
    from mvcaug.io.embedding_table import write_embeddings
    from mvcaug.io.images import read_manifest

    train = [r for r in read_manifest(prepared).to_pylist() if r["split"] == "train"]
    rng = np.random.default_rng(0)
    emb = tmp / "emb"
    write_embeddings(emb / "embeddings.parquet", {"id": [r["id"] for r in train], "label": [r["label"] for r in train]},
                     rng.normal(size=(len(train), M, text_dim)).astype(np.float32))
    write_embeddings(emb / "null.parquet", {"caption": [""]}, rng.normal(size=(1, M, text_dim)).astype(np.float32))
    labels = sorted({r["label"] for r in train})
    mixes = rng.normal(size=(len(labels), M, text_dim)).astype(np.float32)
    write_embeddings(tmp / "mixed.parquet", {"label": labels}, mixes)
    return Params(paths=PathsParams(prepared=str(prepared), embeddings=str(emb), mixed=str(tmp / "mixed.parquet"),
                                    model=str(tmp / "model"), run=str(tmp / "run")),
                  prepare=PrepareParams(resolution=SIZE, channels=1), finetune=tuning)


def sd_finetune(tiny_sd: Path, method: str) -> FinetuneParams:
    """From the tiny SD checkpoint; a high learning rate so four steps move the adapters and conv_in's
    condition channels."""
    return FinetuneParams(init="pretrained", codec="vae", pretrained=str(tiny_sd), method=method, lora_rank=4,
                          lora_alpha=8.0, steps=4, batch_size=4, learning_rate=1e-2, lr_warmup_steps=0,
                          validation_every=0)


@pytest.fixture(scope="module", params=["full", "lora"])
def finetuned(request, tmp_path_factory, digits_prepared, tiny_sd) -> tuple[Params, Path]:
    """(params, model folder) after the finetune task ran."""
    method = request.param
    params = task_params(tmp_path_factory.mktemp(method), digits_prepared[0], sd_finetune(tiny_sd, method))
    finetune.fn(params)
    return params, Path(params.paths.model)


def conditions() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grayscale conditioning images in [-1, 1], text embeddings, null embedding, initial latent noise)."""
    g = torch.Generator().manual_seed(7)
    cond = torch.rand(2, 1, SIZE, SIZE, generator=g) * 2 - 1
    return (cond, torch.randn(2, M, TEXT_DIM, generator=g), torch.randn(1, M, TEXT_DIM, generator=g),
            torch.randn(2, 4, SIZE // 2, SIZE // 2, generator=g))


def stock_images(pipe, guidance: float, image_guidance: float) -> torch.Tensor:
    """The stock pipeline's images in [0, 1] (RGB) with DDIM, as generate.scheduler: ddim samples."""
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    cond, text, null, noise = conditions()
    return pipe(image=cond.expand(-1, 3, -1, -1) * 0.5 + 0.5, prompt_embeds=text,
                negative_prompt_embeds=null.expand_as(text), latents=noise.clone(), num_inference_steps=4,
                guidance_scale=guidance, image_guidance_scale=image_guidance, output_type="pt").images


def our_images(folder: Path, guidance: float, image_guidance: float) -> torch.Tensor:
    """This product's generation from the same folder (load_denoiser + sample), in [0, 1], decoded to RGB
    (the stage averages a grayscale dataset's channels; the pipeline cannot know the dataset is grayscale)."""
    denoiser = load_denoiser(folder, CPU)
    denoiser.codec.channels = 3
    cond, text, null, noise = conditions()
    return sample(denoiser, cond, text, null, noise, "ddim", 4, guidance, image_guidance) * 0.5 + 0.5


@pytest.mark.parametrize(("guidance", "image_guidance"), [(2.0, 1.0), (7.5, 1.5)])
def test_the_finetuned_folder_loads_in_the_stock_pipeline_and_gives_our_images(finetuned, guidance, image_guidance):
    params, folder = finetuned
    lora = params.finetune.method == "lora"
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(folder)
    if lora:
        pipe.load_lora_weights(folder / "unet")  # finds unet/pytorch_lora_weights.safetensors by itself
    theirs = stock_images(pipe, guidance, image_guidance)
    ours = our_images(folder, guidance, image_guidance)
    assert theirs.shape == (2, 3, SIZE, SIZE)
    difference = (ours - theirs).abs().max().item()
    assert difference < 1e-4, difference
    # conv_in's condition channels (zero in the widened base) were trained, and the stock U-Net has them
    assert pipe.unet.config.in_channels == 8 and pipe.unet.conv_in.weight[:, 4:].abs().max() > 1e-3


def test_without_load_lora_weights_the_stock_pipeline_lacks_the_adapters(finetuned):
    """The adapters are in the LoRA file, not in unet/: the plain folder alone gives other images."""
    params, folder = finetuned
    if params.finetune.method != "lora":
        pytest.skip("a full fine-tune has no adapters")
    plain = stock_images(StableDiffusionInstructPix2PixPipeline.from_pretrained(folder), 2.0, 1.0)
    assert (plain - our_images(folder, 2.0, 1.0)).abs().max().item() > 1e-3


def test_the_folder_is_laid_out_for_diffusers(finetuned, tiny_sd):
    params, folder = finetuned
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInstructPix2PixPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["safety_checker"] == [None, None]
    for part in ("vae", "text_encoder", "unet"):  # safetensors only, no pickles
        assert list((folder / part).glob("*.safetensors")) and not list((folder / part).glob("*.bin"))
    for part in ("vae", "text_encoder", "tokenizer"):  # copies: the folder stays whole when moved or exported
        assert not (folder / part).is_symlink() and not any(p.is_symlink() for p in (folder / part).iterdir())
    unet_files = sorted(p.name for p in (folder / "unet").iterdir())
    if params.finetune.method == "full":
        assert unet_files == ["config.json", "diffusion_pytorch_model.safetensors"]
        return
    assert unet_files == ["config.json", "diffusion_pytorch_model.safetensors", WEIGHTS]
    with safe_open(folder / "unet" / WEIGHTS, "pt") as lora:
        keys, metadata = list(lora.keys()), lora.metadata()
    # diffusers' LoRA format: "unet."-prefixed adapter weights only (its loader refuses anything else), so
    # conv_in, trained in full, travels in unet/'s own weights
    assert keys and all(k.startswith("unet.") and ".lora_" in k for k in keys)
    config = json.loads(metadata["lora_adapter_metadata"])
    assert config["unet.r"] == 4 and config["unet.lora_alpha"] == 8.0
    # a set would be listed in hash order, which changes per process: the file (hashed by generate) would too
    assert config["unet.target_modules"] == sorted(params.finetune.lora_targets)


def test_the_model_card_names_base_data_steps_and_params_without_a_date(finetuned, tiny_sd):
    params, folder = finetuned
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: diffusers\n") and f"base_model: {tiny_sd}\n" in card
    assert f"- data digest: {json_digest(data_digests(params))}" in card and "- steps: 4\n" in card
    assert '"method": "%s"' % params.finetune.method in card and '"learning_rate": 0.01' in card
    assert "StableDiffusionInstructPix2PixPipeline.from_pretrained" in card
    assert ("load_lora_weights" in card) == (params.finetune.method == "lora")
    assert not re.search(r"\d{4}-\d{2}-\d{2}|\d{2}:\d{2}:\d{2}", card)  # no timestamp: the same inputs, the same bytes
    assert str(folder) not in card


def test_the_embedded_default_writes_a_card_and_no_pipeline(tmp_path, digits_prepared):
    """init: scratch with the pixel codec has no VAE or text encoder: no diffusers pipeline, a card saying
    so, and no pipeline part left from an earlier Stable Diffusion run in the same folder."""
    params = task_params(tmp_path, digits_prepared[0], FinetuneParams(
        block_out_channels=(8, 16), attention_head_dim=4, steps=2, batch_size=4, validation_every=0), text_dim=16)
    model = Path(params.paths.model)
    (model / "vae").mkdir(parents=True)
    (model / "vae" / "config.json").write_text("{}")
    (model / "model_index.json").write_text("{}")
    finetune.fn(params)
    assert sorted(p.name for p in model.iterdir() if p.name != "live") == [
        "README.md", "codec.json", "loss.csv", "metrics.json", "scheduler", "unet"]
    card = (model / "README.md").read_text()
    assert "- base model: none" in card and "- steps: 2\n" in card and "No diffusers pipeline loads this model" in card
    assert "base_model:" not in card and "from_pretrained(\"<this folder>\")" not in card


def test_a_base_without_a_text_encoder_keeps_its_model_and_says_no_pipeline(tiny_sd, tmp_path, caplog):
    """Saving runs after training: a base whose text_encoder/ and tokenizer/ are missing costs the pipeline
    files, with a warning and the card saying why, never the trained model."""
    base = tmp_path / "unet-and-vae-only"
    for part in ("unet", "vae", "scheduler"):
        (base / part).parent.mkdir(parents=True, exist_ok=True)
        (base / part).symlink_to(tiny_sd / part)
    params = Params(finetune=sd_finetune(base, "lora"))
    denoiser = build_denoiser(params.finetune, channels=3, resolution=SIZE, text_dim=TEXT_DIM, device=CPU)
    model = tmp_path / "model"
    save_model(params, denoiser, model, card_facts(params, denoiser, SIZE, 0, {"data": "d"}))
    assert not (model / "model_index.json").exists() and not (model / "vae").exists()
    assert "no diffusers pipeline files" in caplog.text and "text_encoder" in caplog.text
    card = (model / "README.md").read_text()
    assert "No diffusers pipeline loads this model: the base checkpoint had no loadable text_encoder/" in card
    assert load_denoiser(model, CPU).unet.config.in_channels == 8
