"""GPU check and benchmark of the Stable Diffusion path, with no download: one command on one GPU.

    .venv/bin/python benchmarks/gpu.py [--out gpu.json]      # SD 1.5-shaped models, 256 px, on CUDA
    .venv/bin/python benchmarks/gpu.py --tiny                 # the same checks on a tiny checkpoint (CPU)
    .venv/bin/python benchmarks/gpu.py --tiny --dtype bf16    # ... with generation in half precision (CPU: bf16)

It builds a U-Net, VAE and CLIP text encoder shaped exactly like Stable Diffusion 1.5 from the configs in
benchmarks/configs/sd15/ (random weights; speed and memory do not depend on the values), saves them as a
checkpoint folder and goes through the product's own loaders. Then it measures and prints:

1. fine-tuning samples/s and peak GPU memory at 256 px, batch 8, bf16 with gradient checkpointing, for full
   and LoRA fine-tuning, EMA on the GPU, on the CPU and off, beside the pre-training memory estimate
   (mvcaug/models/gpu_memory.py) to show how close it is; and at 512 px for full and LoRA without EMA; against the
   targets: a full fine-tune at 256 px with the profile's memory options within 24 GB, LoRA within 12 GB;
2. generation images/s of our sampler against diffusers' StableDiffusionInstructPix2PixPipeline at the
   same settings (--dtype: fp16 on CUDA by default, DDIM, 25 steps), at the profile's guidance (Eq. 6:
   text guidance 7.5, image guidance 1.0) and at InstructPix2Pix's 7.5 / 1.5, as ratios from one run (the
   target: at least 1.3x at the profile's), with their largest pixel difference, our sampler again with the
   U-Net in channels_last, and (on CUDA, or with --compile) with the U-Net compiled (generate.compile);
   every model of the pipeline (text encoder included) in that one dtype;
3. no NaN or inf in the U-Net's output and the VAE's decode in bf16 and fp16 (bf16 only on CPU);
4. an interrupted and resumed fine-tuning run ends with the weights of an uninterrupted one.

The figures go to stdout as one table and, with --out, to a JSON file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mvcaug.io.checkpoints import list_checkpoints  # noqa: E402
from mvcaug.method.finetune import (  # noqa: E402
    ClassConditions, ConditionSampler, build_denoiser, memory_estimate, train_denoiser,
)
from mvcaug.models.gpu_memory import GIB  # noqa: E402
from mvcaug.core.params import FinetuneParams, MixParams  # noqa: E402
from mvcaug.method.sampling import sample  # noqa: E402
from tests.sd_checkpoint import build_tiny_sd, instruct_pix2pix_pipeline  # noqa: E402

log = logging.getLogger("benchmarks.gpu")
CONFIGS = ROOT / "benchmarks" / "configs" / "sd15"


@dataclasses.dataclass(frozen=True)
class Scale:
    """What the run measures at: the real shapes on a GPU, or tiny ones that prove the script on a CPU."""

    size: int  # image resolution (px)
    batch: int
    steps: int  # fine-tuning steps per case (the first `warm` are not timed)
    warm: int
    sample_steps: int
    text: tuple[int, int]  # m x d


FULL = Scale(size=256, batch=8, steps=12, warm=3, sample_steps=25, text=(77, 768))
TINY = Scale(size=16, batch=2, steps=4, warm=1, sample_steps=3, text=(77, 32))
LARGE = {FULL: dataclasses.replace(FULL, size=512), TINY: dataclasses.replace(TINY, size=32)}
"""The second fine-tuning resolution of each scale (512 px for SD 1.5)."""
GUIDANCE = {"profile (Eq. 6)": (7.5, 1.0), "InstructPix2Pix": (7.5, 1.5)}
"""(text guidance, image guidance) settings generation is timed at: profiles/sd15.yaml's, and the stock
pipeline's usual ones."""
TARGETS = {"generation_ratio_at_profile": 1.3, "full_256_gib": 24.0, "lora_256_gib": 12.0}


class Interrupt(Exception):
    pass


def build_checkpoint(folder: Path, tiny: bool, device: torch.device) -> Path:
    """A Stable Diffusion folder (unet/, vae/, text_encoder/, scheduler/) with random weights."""
    if tiny:
        return build_tiny_sd(folder, cross_attention_dim=TINY.text[1])
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    with torch.device(device):  # random initialisation of 1.1 B weights is much faster on the GPU
        for name, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
            cls.from_config(cls.load_config(CONFIGS / name)).save_pretrained(folder / name, safe_serialization=True)
        CLIPTextModel(CLIPTextConfig.from_pretrained(CONFIGS / "text_encoder")).save_pretrained(
            folder / "text_encoder", safe_serialization=True)
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(
        (CONFIGS / "scheduler" / "scheduler_config.json").read_text())
    return folder


def training_inputs(scale: Scale) -> tuple[torch.Tensor, ConditionSampler, np.ndarray]:
    """Two classes of 8 random RGB images with random caption embeddings."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, scale.size, scale.size, generator=g) * 2 - 1
    emb = np.random.default_rng(0).normal(size=(16, *scale.text)).astype(np.float32)
    classes = {"a": ClassConditions(np.arange(8), emb[:8], emb[:8]),
               "b": ClassConditions(np.arange(8, 16), emb[8:], emb[8:])}
    return images, ConditionSampler(classes, MixParams(), "table", seed=0), np.zeros(scale.text, np.float32)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def finetune_case(folder: Path, scale: Scale, device: torch.device, name: str, **changes) -> dict:
    """Samples/s and peak memory of a few fine-tuning steps, with the estimate made before them."""
    settings = dict(init="pretrained", codec="vae", pretrained=str(folder), mixed_precision="bf16",
                    gradient_checkpointing=True, batch_size=scale.batch, steps=scale.steps, lr_warmup_steps=0,
                    validation_every=0, learning_rate=1e-5)
    params = FinetuneParams(**{**settings, **changes})
    images, sampler, null = training_inputs(scale)
    denoiser = build_denoiser(params, 3, scale.size, scale.text[1], device)
    estimate = memory_estimate(denoiser, params, scale.text)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    stamps: list[float] = []

    def on_step(step: int, loss: float) -> None:
        synchronize(device)
        stamps.append(time.perf_counter())

    losses = train_denoiser(denoiser, images, sampler, null, params, on_step=on_step)
    timed = stamps[scale.warm:]
    result = {
        "case": name, "samples_per_s": scale.batch * (len(timed) - 1) / (timed[-1] - timed[0]),
        "peak_gib": torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None,
        "estimate_gib": estimate.total / GIB, "loss_finite": bool(np.all(np.isfinite(losses))),
        "trained_parameters": sum(p.numel() for p in denoiser.unet.parameters() if p.requires_grad),
    }
    del denoiser
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def generation_dtype(name: str, device: torch.device) -> torch.dtype:
    """--dtype: auto is fp16 on CUDA (what generate uses there) and fp32 on the CPU; bf16 runs on both,
    so the half-precision path is checked on a CPU too."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name == "fp16" and device.type != "cuda":
        raise SystemExit("--dtype fp16 needs CUDA: the CPU runs bf16 (--dtype bf16)")
    return DTYPES[name]


def generation(folder: Path, scale: Scale, device: torch.device, dtype: torch.dtype, compile_unet: bool) -> dict:
    """{setting: figures} for each GUIDANCE setting: images/s of our sampler and of the stock InstructPix2Pix
    pipeline on the same inputs, all in `dtype`; their largest difference; our sampler with a channels_last
    U-Net and, with `compile_unet`, compiled (generate.compile's tune_denoiser)."""
    return {name: generation_at(folder, scale, device, dtype, text_scale, image_scale, compile_unet)
            for name, (text_scale, image_scale) in GUIDANCE.items()}


def generation_at(folder: Path, scale: Scale, device: torch.device, dtype: torch.dtype, text_scale: float,
                  image_scale: float, compile_unet: bool) -> dict:
    """generation's figures at one guidance setting."""
    from mvcaug.method.generate import tune_denoiser
    from mvcaug.core.params import GenerateParams

    params = FinetuneParams(init="pretrained", codec="vae", pretrained=str(folder))
    denoiser = build_denoiser(params, 3, scale.size, scale.text[1], device)
    with torch.no_grad():  # the condition channels start at zero: give them weights so the image matters
        weight = denoiser.unet.conv_in.weight
        weight[:, 4:] = 0.05 * torch.randn(weight[:, 4:].shape, generator=torch.Generator().manual_seed(1)).to(weight)
    denoiser.unet.to(dtype).eval()
    denoiser.codec.vae.to(dtype)
    g = torch.Generator().manual_seed(2)
    cond = (torch.rand(scale.batch, 3, scale.size, scale.size, generator=g) * 2 - 1).to(device, dtype)
    text = torch.randn(scale.batch, *scale.text, generator=g).to(device, dtype)
    null = torch.randn(1, *scale.text, generator=g).to(device, dtype)
    latent = scale.size // denoiser.codec.downscale
    noise = torch.randn(scale.batch, 4, latent, latent, generator=g).to(device, dtype)
    pipeline = instruct_pix2pix_pipeline(folder, denoiser)
    pipeline.set_progress_bar_config(disable=True)

    def ours() -> torch.Tensor:
        return sample(denoiser, cond, text, null, noise, "ddim", scale.sample_steps, text_scale, image_scale) * 0.5 + 0.5

    def theirs() -> torch.Tensor:
        return pipeline(image=cond * 0.5 + 0.5, prompt_embeds=text, negative_prompt_embeds=null.expand_as(text),
                        latents=noise.clone(), num_inference_steps=scale.sample_steps, guidance_scale=text_scale,
                        image_guidance_scale=image_scale, output_type="pt").images

    def timed(fn) -> tuple[float, torch.Tensor]:
        fn()  # warm-up
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        return scale.batch / (time.perf_counter() - start), out

    our_rate, our_images = timed(ours)
    their_rate, their_images = timed(theirs)
    figures = {
        "dtype": str(dtype).removeprefix("torch."), "guidance": [text_scale, image_scale],
        "ours_images_per_s": our_rate, "pipeline_images_per_s": their_rate, "ratio": our_rate / their_rate,
        "max_abs_difference": (our_images.float() - their_images.float()).abs().max().item(),
    }
    eager = denoiser.unet
    denoiser.unet = tune_denoiser(denoiser, GenerateParams(channels_last=True)).unet
    last_rate, last_images = timed(ours)
    figures.update({"channels_last_images_per_s": last_rate,
                    "channels_last_max_abs_difference": (last_images.float() - our_images.float()).abs().max().item()})
    if compile_unet:
        denoiser.unet = tune_denoiser(denoiser, GenerateParams(channels_last=True, compile=True)).unet
        compiled_rate, compiled_images = timed(ours)  # timed() warms up first: compilation is not counted
        figures.update({"compiled_images_per_s": compiled_rate, "compiled_ratio": compiled_rate / their_rate,
                        "compiled_max_abs_difference":
                            (compiled_images.float() - our_images.float()).abs().max().item()})
    denoiser.unet = eager
    return figures


def finite_outputs(folder: Path, scale: Scale, device: torch.device) -> dict:
    """No NaN or inf in the U-Net's prediction and the VAE's decode, in each half precision the device has."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    results = {}
    dtypes = (torch.bfloat16, torch.float16) if device.type == "cuda" else (torch.bfloat16,)
    for dtype in dtypes:
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype).to(device)
        vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype).to(device)
        latent = scale.size // 2 ** (len(vae.config.block_out_channels) - 1)  # the VAE's downscale
        g = torch.Generator().manual_seed(3)
        z = torch.randn(2, 4, latent, latent, generator=g).to(device, dtype)
        text = torch.randn(2, *scale.text, generator=g).to(device, dtype)
        with torch.no_grad():
            eps = unet(z, torch.tensor([999, 1], device=device), encoder_hidden_states=text).sample
            image = vae.decode(z / vae.config.scaling_factor).sample
        results[str(dtype).removeprefix("torch.")] = bool(torch.isfinite(eps).all() and torch.isfinite(image).all())
        del unet, vae
    return results


def resume_matches(folder: Path, scale: Scale, device: torch.device, work: Path) -> dict:
    """LoRA fine-tuning interrupted after its step-3 checkpoint and resumed, against one straight run."""
    params = FinetuneParams(init="pretrained", codec="vae", pretrained=str(folder), method="lora",
                            mixed_precision="bf16", batch_size=2, steps=6, checkpoint_every=3, lr_warmup_steps=0,
                            validation_every=0, ema=True, ema_decay=0.9)
    images, sampler, null = training_inputs(scale)

    def run(root: Path, stop_at: int | None = None) -> dict[str, torch.Tensor]:
        denoiser = build_denoiser(params, 3, scale.size, scale.text[1], device)

        def on_step(step: int, loss: float) -> None:
            if step == stop_at:
                raise Interrupt

        local = ConditionSampler(sampler.classes, sampler.mix, "table", seed=0)
        train_denoiser(denoiser, images, local, null, params, on_step=on_step, checkpoint_dir=root,
                       data_digests={"data": "gpu-benchmark"})
        return {k: v.detach().float().cpu() for k, v in denoiser.unet.state_dict().items()}

    straight = run(work / "straight")
    try:
        run(work / "resumed", stop_at=4)
    except Interrupt:
        pass
    resumed_from = [c.step for c in list_checkpoints(work / "resumed")]
    resumed = run(work / "resumed")
    difference = max((straight[k] - resumed[k]).abs().max().item() for k in straight)
    return {"resumed_from_step": resumed_from[-1] if resumed_from else None, "max_abs_difference": difference,
            "equal": difference <= 1e-6}


CASES = {
    "full, EMA on GPU": {"ema": True, "ema_decay": 0.999},
    "full, EMA on CPU": {"ema": True, "ema_decay": 0.999, "ema_device": "cpu"},
    "full, no EMA": {},
    "full, no EMA, Adafactor": {"optimizer": "adafactor"},
    "LoRA r=8, EMA on GPU": {"method": "lora", "ema": True, "ema_decay": 0.999, "learning_rate": 1e-4},
    "LoRA r=8, no EMA": {"method": "lora", "learning_rate": 1e-4},
}
LARGE_CASES = ("full, no EMA", "LoRA r=8, no EMA")
"""The cases also run at the larger resolution (LARGE)."""


def target_checks(results: dict) -> dict[str, bool | None]:
    """The issue's targets, from the figures (None where the figure cannot be had here: memory on the CPU)."""
    cases = {case["case"]: case for case in results["finetune"]}

    def within(case: str, gib: float) -> bool | None:
        peak = cases[case]["peak_gib"]
        return None if peak is None else peak <= gib

    return {
        "generation at least 1.3x the stock pipeline at the profile's guidance":
            results["generation"]["profile (Eq. 6)"]["ratio"] >= TARGETS["generation_ratio_at_profile"],
        "full fine-tune at 256 px within 24 GB (EMA on CPU, the profile's knob for 24 GB cards)":
            within("full, EMA on CPU", TARGETS["full_256_gib"]),
        "LoRA at 256 px within 12 GB": within("LoRA r=8, no EMA", TARGETS["lora_256_gib"]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny checkpoint on the CPU: checks the script itself")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                        help="generation's dtype, for our sampler and the whole stock pipeline alike "
                             "(auto: fp16 on CUDA, fp32 on the CPU; bf16 runs on the CPU too)")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.add_argument("--compile", action="store_true",
                        help="also time the compiled U-Net on the CPU (on CUDA it always is; a cold CPU compile takes minutes)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    scale = TINY if args.tiny else FULL
    if device.type == "cpu" and not args.tiny:
        raise SystemExit("no CUDA device: run with --tiny to check the script on the CPU")
    dtype = generation_dtype(args.dtype, device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mvcaug-gpu-") as tmp:
        folder = build_checkpoint(Path(tmp) / "sd", args.tiny, device)
        results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                         "scale": dataclasses.asdict(scale), "torch": torch.__version__}
        results["finetune"] = [finetune_case(folder, scale, device, name, **changes) for name, changes in CASES.items()]
        large = LARGE[scale]
        results["finetune"] += [finetune_case(folder, large, device, f"{name}, {large.size} px", **CASES[name])
                                for name in LARGE_CASES]
        results["generation"] = generation(folder, scale, device, dtype, args.compile or device.type == "cuda")
        results["finite"] = finite_outputs(folder, scale, device)
        results["resume"] = resume_matches(folder, scale, device, Path(tmp))
    results["seconds"] = time.perf_counter() - started
    results["targets"] = target_checks(results)
    log.info("| fine-tuning case (%d px, batch %d, bf16, checkpointing) | samples/s | peak GiB | estimate GiB | trained weights |",
             scale.size, scale.batch)
    log.info("| --- | --- | --- | --- | --- |")
    for case in results["finetune"]:
        peak = f"{case['peak_gib']:.3f}" if case["peak_gib"] is not None else "n/a (CPU)"
        log.info("| %s | %.2f | %s | %.3f | %d |", case["case"], case["samples_per_s"], peak, case["estimate_gib"],
                 case["trained_parameters"])
    for setting, gen in results["generation"].items():
        compiled = (f"; compiled %.2f images/s (ratio %.2f)" % (gen["compiled_images_per_s"], gen["compiled_ratio"])
                    if "compiled_images_per_s" in gen else "")
        log.info("generation (%s, %s %s): ours %.2f images/s, InstructPix2Pix pipeline %.2f images/s, ratio %.2f, "
                 "max |diff| %.2g; channels_last %.2f images/s%s", gen["dtype"], setting, gen["guidance"],
                 gen["ours_images_per_s"], gen["pipeline_images_per_s"], gen["ratio"], gen["max_abs_difference"],
                 gen["channels_last_images_per_s"], compiled)
    for target, met in results["targets"].items():
        log.info("target: %s: %s", target, {True: "met", False: "NOT met", None: "not measurable here"}[met])
    log.info("finite outputs: %s; resume equals a straight run: %s (max |diff| %.2g); %.0f s in all",
             results["finite"], results["resume"]["equal"], results["resume"]["max_abs_difference"], results["seconds"])
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
