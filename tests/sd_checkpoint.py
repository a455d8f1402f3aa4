"""A tiny random Stable Diffusion checkpoint, built offline, laid out like the real one.

Tests point `finetune.pretrained` (or `embed.encoder`) at the folder `build_tiny_sd` writes, so the
real loading code (`from_pretrained` with safetensors) runs without the hub:
unet/, vae/, scheduler/, text_encoder/, tokenizer/ and model_index.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

MAX_TOKENS = 77
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
MERGES = ("t h", "th e</w>", "i s</w>", "a n", "o f</w>", "i m", "a g", "ag e</w>")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character table, which CLIP's byte-level BPE uses."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def write_tokenizer(folder: Path) -> int:
    """vocab.json (every byte, alone and word-final, a few merges, the two specials) and merges.txt,
    then a CLIPTokenizer saved from them. Returns the vocabulary size."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in MERGES] + list(SPECIAL_TOKENS)
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_TOKENS)
    tokenizer.save_pretrained(folder)
    return len(vocab)


def write_text_encoder(folder: Path, vocab_size: int, hidden_size: int) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )
    CLIPTextModel(config).save_pretrained(folder, safe_serialization=True)


def write_unet(folder: Path, cross_attention_dim: int) -> None:
    from diffusers import UNet2DConditionModel

    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=4, norm_num_groups=8,
    ).save_pretrained(folder, safe_serialization=True)


def write_vae(folder: Path) -> None:
    from diffusers import AutoencoderKL

    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=16, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16), norm_num_groups=8, scaling_factor=0.18215,
    ).save_pretrained(folder, safe_serialization=True)


SD15_SCHEDULER = json.loads(
    (Path(__file__).resolve().parents[1] / "benchmarks/configs/sd15/scheduler/scheduler_config.json").read_text())
"""stable-diffusion-v1-5's scheduler/scheduler_config.json, key for key (no prediction_type: epsilon), as
benchmarks/gpu.py uses it too."""


def write_scheduler(folder: Path, prediction_type: str = "epsilon") -> None:
    """Stable Diffusion v1.5's scheduler config as the checkpoint ships it; another prediction_type
    (v_prediction, as SD 2.x at 768 px) is written the way those checkpoints write it."""
    config = dict(SD15_SCHEDULER, **({} if prediction_type == "epsilon" else {"prediction_type": prediction_type}))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scheduler_config.json").write_text(json.dumps(config, indent=2))


def build_tiny_sd(folder: Path, cross_attention_dim: int = 32) -> Path:
    """Write a tiny random SD checkpoint into `folder` (seeded: the same weights every call)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    vocab_size = write_tokenizer(folder / "tokenizer")
    write_text_encoder(folder / "text_encoder", vocab_size, cross_attention_dim)
    write_unet(folder / "unet", cross_attention_dim)
    write_vae(folder / "vae")
    write_scheduler(folder / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
        "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def instruct_pix2pix_pipeline(folder: Path, denoiser):
    """diffusers' stock StableDiffusionInstructPix2PixPipeline around our denoiser's U-Net, VAE and schedule
    (DDIM), with the checkpoint's text encoder: the reference our sampler is compared with.

    The text encoder takes the U-Net's device and dtype: the pipeline casts prompt embeddings to the text
    encoder's dtype and encodes the image in that dtype, so an fp32 encoder beside an fp16 VAE fails."""
    from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = denoiser.unet
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=unet.dtype).to(unet.device)
    return StableDiffusionInstructPix2PixPipeline(
        vae=denoiser.codec.vae, text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer") if (folder / "tokenizer").is_dir() else None,
        unet=denoiser.unet, scheduler=DDIMScheduler.from_config(denoiser.noise_scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
