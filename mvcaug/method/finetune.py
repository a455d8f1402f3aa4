"""Fine-tune the conditional denoiser InstructPix2Pix-style (the paper's Eq. 4).

Each sample: x and x' from the same class; z_t = noised latent of x; input = [z_t, latent of x'];
text = an MVC embedding of the class; loss = ||eps - eps_theta(z_t, t, e_T, e_I)||^2. Conditioning
dropout (text, image, both) teaches the unconditional branches that guidance needs at generation.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from PIL import Image
from tqdm import tqdm

from mvcaug.io.checkpoints import Checkpoint, RunInputs, find_resumable, run_inputs, save_checkpoint, set_aside_others
from mvcaug.models.codecs import LatentCache, PixelCodec
from mvcaug.io.models import load_pretrained_scheduler, load_pretrained_unet, load_vae_codec
from mvcaug.models.denoiser import (
    Denoiser, build_scratch_unet, check_compatible, expand_conv_in, scratch_noise_scheduler, takes_image_condition,
)
from mvcaug.data.images import to_image
from mvcaug.models.lora import add_lora
from mvcaug.method.mix import apply_plan, draw_plan
from mvcaug.core.errors import DeviceError, MissingInputError
from mvcaug.core.params import FinetuneParams, MixParams
from mvcaug.io.model_sources import ModelError

__all__ = ["ClassConditions", "ConditionSampler", "own_captions", "class_conditions", "summarise_losses",
    "build_denoiser", "dropout_masks", "diffusion_loss", "min_snr_weights", "trained", "make_optimizer",
    "adamw_kernel", "ema_device", "memory_estimate", "train_denoiser", "validation_grid"]

log = logging.getLogger(__name__)

StepCallback = Callable[[int, float], None]
"""(step index from 0, loss of that step)."""
ValidationCallback = Callable[[int, torch.Tensor], None]
"""(steps done, images (n, C, H, W) in [-1, 1])."""
CheckCallback = Callable[[int], None]
"""(steps done), called while the denoiser holds the weights a save would write."""


@dataclass
class ClassConditions:
    """Everything the sampler needs to build (x, x', e_T) for one class."""

    image_indices: np.ndarray  # rows of the training-image tensor
    caption_embeddings: np.ndarray  # (K, m, d), for fresh mixes
    mixed_embeddings: np.ndarray  # (N_y, m, d), for mixes drawn from mixed.parquet
    caption_of_image: np.ndarray | None = None
    """For text_condition target: the row of caption_embeddings that is each image's own caption
    (aligned with image_indices)."""


class ConditionSampler:
    """Draws training pairs and text conditions, class by class, from one seeded stream."""

    def __init__(self, classes: dict[str, ClassConditions], mix: MixParams, mode: str, seed: int):
        self.classes = classes
        self.labels = sorted(classes)
        self.mix = mix
        self.mode = mode
        self.rng = np.random.default_rng(seed)

    def text_condition(self, label: str, target: int | None = None) -> np.ndarray:
        """The text of one sample of `label`: a fresh MVC mix, a row of mixed.parquet, or (target) Algorithm 1's
        edits applied to the caption of `target` (a row of image_indices), so the text says something of the
        image the loss asks for and the denoiser has a reason to read it."""
        conditions = self.classes[label]
        if self.mode == "table":
            return conditions.mixed_embeddings[self.rng.integers(len(conditions.mixed_embeddings))]
        count, m, d = conditions.caption_embeddings.shape
        start = None
        if self.mode == "target":
            if conditions.caption_of_image is None or target is None:
                raise ValueError("text_condition target needs each image's own caption (caption_of_image)")
            start = int(conditions.caption_of_image[target])
        plan = draw_plan(self.rng, count, m, d, self.mix.coarse_steps, self.mix.fine_steps, start=start)
        return apply_plan(plan, conditions.caption_embeddings)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(target indices, condition indices, text embeddings (size, m, d)) for one step."""
        targets, conds, texts = [], [], []
        for label in self.rng.choice(self.labels, size=size):
            pool = self.classes[label].image_indices
            target, cond = self.rng.choice(len(pool), size=2, replace=len(pool) < 2)
            targets.append(pool[target])
            conds.append(pool[cond])
            texts.append(self.text_condition(label, int(target)))
        return np.array(targets), np.array(conds), np.stack(texts)


def own_captions(indices: np.ndarray, image_ids: Sequence[str], caption_ids: Sequence[str]) -> np.ndarray:
    """For each image of a class (rows `indices` of the training images), the position of its own caption among
    the class's captions: what finetune.text_condition target starts from. An image without a caption is a
    missing input (the caption and embed stages did not see it), refused here rather than trained without text."""
    position = {caption_id: k for k, caption_id in enumerate(caption_ids)}
    missing = [image_ids[i] for i in indices if image_ids[i] not in position]
    if missing:
        raise MissingInputError(f"no caption embedding for training image '{missing[0]}'; rerun the caption and embed "
                                "stages", stage="embed")
    return np.array([position[image_ids[i]] for i in indices], dtype=np.int64)


def class_conditions(
    image_labels: Sequence[str], image_ids: Sequence[str], caption_labels: Sequence[str],
    caption_ids: Sequence[str], caption_embeddings: np.ndarray, mixed_labels: Sequence[str],
    mixed_embeddings: np.ndarray,
) -> dict[str, ClassConditions]:
    """The sampler's view of the training data, class by class (sorted): each class's image rows, its captions'
    embeddings (in caption-table order), its rows of mixed.parquet, and each image's own caption among them.
    Grouping by the label columns here, not by position, keeps a class's texts with its images whatever order
    the caption, embedding and mix tables were written in; every array is float32, what the U-Net reads."""
    image_array, caption_array, mixed_array = (np.asarray(labels) for labels in
                                               (image_labels, caption_labels, mixed_labels))
    classes = {}
    for label in sorted(set(image_labels)):
        rows = np.flatnonzero(caption_array == label)
        indices = np.flatnonzero(image_array == label).astype(np.int64)
        classes[label] = ClassConditions(
            indices, caption_embeddings[rows].astype(np.float32),
            mixed_embeddings[mixed_array == label].astype(np.float32),
            caption_of_image=own_captions(indices, image_ids, [caption_ids[int(r)] for r in rows]),
        )
    return classes


def summarise_losses(losses: Sequence[float], decimals: int = 5) -> dict[str, float | int]:
    """{"loss_first", "loss_last", "steps"}: the mean loss of the first and the last tenth of the run (at least
    one step each), what the stage's metrics.json compares across runs. A single step's loss is noise (each draws
    its own timesteps and pairs), a tenth's mean is not; the first tenth is as long as the last, so the two are
    alike in noise. Needs at least one loss."""
    if not losses:
        raise ValueError("summarise_losses needs the loss of at least one step")
    tail = max(1, len(losses) // 10)
    return {"loss_first": round(statistics.fmean(losses[:tail]), decimals),
            "loss_last": round(statistics.fmean(losses[-tail:]), decimals), "steps": len(losses)}


def build_denoiser(
    params: FinetuneParams, channels: int, resolution: int, text_dim: int, device: torch.device
) -> Denoiser:
    """The initial model: a small pixel-space U-Net, or a pretrained SD U-Net with conv_in widened.
    Seeded here, so finetune.seed fixes the initial weights."""
    torch.manual_seed(params.seed)
    codec = (
        load_vae_codec(params.pretrained, device, channels=channels) if params.codec == "vae"
        else PixelCodec(channels)
    )
    if params.init == "scratch":
        unet = build_scratch_unet(codec.latent_channels, resolution // codec.downscale, text_dim, params)
        return Denoiser(unet.to(device), scratch_noise_scheduler(params), codec)
    unet = load_pretrained_unet(params.pretrained)
    check_compatible(unet, codec, text_dim, resolution)
    unet = expand_conv_in(unet, codec.latent_channels)
    # Generation reads the model's resolution from sample_size: make it the one we fine-tune at.
    unet.register_to_config(sample_size=resolution // codec.downscale)
    scheduler = load_pretrained_scheduler(params.pretrained)
    check_prediction_type(scheduler, params.pretrained)
    if params.method == "lora":
        add_lora(unet, params)
    log.info("fine-tuning %s (%d parameters)", params.pretrained, sum(p.numel() for p in unet.parameters()))
    return Denoiser(unet.to(device), scheduler, codec)


def dropout_masks(
    size: int, params: FinetuneParams, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep_text, keep_image) per sample from one uniform draw, laid out as diffusers'
    train_instruct_pix2pix.py does: [0, text) text only, [text, text + both) both, then image only. With
    the three probabilities equal to its conditioning_dropout_prob, the same draw drops the same conditions."""
    r = torch.rand(size, generator=generator, device=device)
    text_end = params.text_dropout + params.both_dropout
    keep_text = r >= text_end
    keep_image = ~((r >= params.text_dropout) & (r < text_end + params.image_dropout))
    return keep_text, keep_image


def diffusion_loss(
    denoiser: Denoiser,
    unet: torch.nn.Module,
    target_images: torch.Tensor,
    cond_images: torch.Tensor,
    text: torch.Tensor,
    null_text: torch.Tensor,
    params: FinetuneParams,
    generator: torch.Generator,
) -> torch.Tensor:
    """Eq. 4 with conditioning dropout, on one batch; `unet` may be Accelerate's wrapped denoiser.unet."""
    # 1. Latents: z0 from x, the condition from x'.
    z0 = denoiser.codec.encode_target(target_images, generator)
    cond = denoiser.codec.encode_condition(cond_images)
    return latent_diffusion_loss(denoiser, unet, z0, cond, text, null_text, params, generator)


def latent_diffusion_loss(
    denoiser: Denoiser,
    unet: torch.nn.Module,
    z0: torch.Tensor,
    cond: torch.Tensor,
    text: torch.Tensor,
    null_text: torch.Tensor,
    params: FinetuneParams,
    generator: torch.Generator,
) -> torch.Tensor:
    """diffusion_loss from the latents on: z0 of x and the conditioning latent of x' (LatentCache's)."""
    device = z0.device
    # 2. Drop conditions so the unconditional branches are learned.
    keep_text, keep_image = dropout_masks(len(z0), params, generator, device)
    text = torch.where(keep_text[:, None, None], text, null_text.expand_as(text))
    cond = cond * keep_image[:, None, None, None].to(cond.dtype)
    # 3. Noise at a random timestep and predict it.
    noise = torch.randn(z0.shape, generator=generator, device=device, dtype=z0.dtype)
    steps = denoiser.noise_scheduler.config.num_train_timesteps
    t = torch.randint(0, steps, (len(z0),), generator=generator, device=device)
    zt = denoiser.noise_scheduler.add_noise(z0, noise, t)
    # A text-to-image U-Net (pretraining, as Stable Diffusion's own) has no channels for the condition image.
    unet_input = torch.cat([zt, cond.to(zt.dtype)], dim=1) if takes_image_condition(denoiser) else zt
    prediction = unet(unet_input, t, encoder_hidden_states=text.to(zt.dtype)).sample
    target = training_target(denoiser.noise_scheduler, z0, noise, t)
    if not params.snr_gamma:
        return F.mse_loss(prediction.float(), target.float())
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * min_snr_weights(denoiser.noise_scheduler, t, params.snr_gamma)).mean()


def min_snr_weights(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights (diffusers' compute_snr, as its training scripts use them): the easy low-noise
    timesteps, whose loss dominates the plain mean, count no more than SNR = gamma."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, t).float()
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if scheduler.config.prediction_type == "v_prediction" else clipped / snr


PREDICTION_TYPES = ("epsilon", "v_prediction")
"""What a U-Net may be trained to predict here; the samplers read the same field from the saved scheduler."""


def training_target(scheduler: DDPMScheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The regression target the checkpoint's scheduler expects: the noise (epsilon) or the velocity
    (v_prediction, e.g. SD 2.x at 768 px). Training a v-prediction model on epsilon would leave it
    sampled as v: wrong images with no error."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(z0, noise, t)
    raise ValueError(f"prediction_type {kind!r}: build_denoiser refuses it before training (check_prediction_type)")


def check_prediction_type(scheduler: DDPMScheduler, source: str) -> None:
    """Refuse an unsupported prediction type before any training step, naming the checkpoint. A fact of the
    checkpoint's scheduler config, known only once it is read: a ModelError, not a params error."""
    kind = scheduler.config.prediction_type
    if kind not in PREDICTION_TYPES:
        raise ModelError(f"'finetune.pretrained' {source!r}: its scheduler's prediction_type is '{kind}'; "
                          f"fine-tuning supports {' and '.join(PREDICTION_TYPES)}: choose another checkpoint")


@dataclass
class TrainingRun:
    """What one training run holds beside the denoiser: Accelerate's prepared objects and the streams."""

    accelerator: Any
    unet: torch.nn.Module  # as prepared by Accelerate (DDP-wrapped on several GPUs)
    optimizer: Any
    lr_schedule: Any
    ema: Any  # diffusers EMAModel, or None
    generator: torch.Generator  # noise, timesteps, dropout, VAE sampling
    images: torch.Tensor
    null: torch.Tensor
    latents: LatentCache
    """The training images' latents, encoded once (the images themselves with the pixel codec)."""

    @property
    def module(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.unet)


def check_device_supports(params: FinetuneParams, device: torch.device) -> None:
    """Refuse fp16 on the CPU before Accelerate fails on it less clearly. The device is the one training runs on,
    known only at run time, so this is a DeviceError; the ranges of the finetune values are checked when
    params.yaml loads (mvcaug.core.params)."""
    if params.mixed_precision == "fp16" and device.type == "cpu":
        raise DeviceError("'finetune.mixed_precision' is fp16, which needs a GPU; on CPU use no or bf16")


def start_run(
    denoiser: Denoiser, images: torch.Tensor, sampler: ConditionSampler, null_text: np.ndarray,
    params: FinetuneParams,
) -> TrainingRun:
    """Accelerator, AdamW, LR schedule and EMA; with several processes each draws its own stream."""
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    device = next(denoiser.unet.parameters()).device
    check_device_supports(params, device)
    accelerator = Accelerator(
        cpu=device.type == "cpu", mixed_precision=params.mixed_precision,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
    )
    torch.manual_seed(params.seed)
    generator = torch.Generator(device=accelerator.device).manual_seed(params.seed)
    if accelerator.num_processes > 1:
        streams = np.random.SeedSequence([params.seed, accelerator.process_index])
        sampler.rng = np.random.default_rng(streams)
        generator.manual_seed(int(streams.generate_state(1)[0]))
    if params.gradient_checkpointing:
        denoiser.unet.enable_gradient_checkpointing()
    if device.type == "cuda":
        check_memory(denoiser, params, null_text.shape, device)
    optimizer = make_optimizer(trained(denoiser.unet), params, device)
    # Accelerate steps a prepared schedule once per process per optimiser step.
    n = accelerator.num_processes
    lr_schedule = get_scheduler(
        params.lr_scheduler, optimizer, num_warmup_steps=params.lr_warmup_steps * n,
        num_training_steps=params.steps * n,
    )
    ema = None
    if params.ema:
        ema = EMAModel(trained(denoiser.unet), decay=params.ema_decay)
    unet, optimizer, lr_schedule = accelerator.prepare(denoiser.unet, optimizer, lr_schedule)
    if ema is not None:
        ema.to(ema_device(params, accelerator.device))
    null = torch.from_numpy(np.asarray(null_text, np.float32)).to(accelerator.device)[None]
    # The training images stay in CPU memory (pinned for fast copies) and go to the device per batch.
    host_images = images.cpu().pin_memory() if accelerator.device.type == "cuda" else images.cpu()
    latents = LatentCache(denoiser.codec, host_images, params.batch_size)
    return TrainingRun(accelerator, unet, optimizer, lr_schedule, ema, generator, host_images, null, latents)


def trained(unet: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights that train (all of them, or LoRA's adapters and conv_in): what the optimizer and EMA see."""
    return [p for p in unet.parameters() if p.requires_grad]


def make_optimizer(parameters, params: FinetuneParams, device: torch.device | None = None) -> torch.optim.Optimizer:
    """AdamW, or transformers' Adafactor at a fixed learning rate (the LR schedule drives it like AdamW).
    On CUDA, AdamW is torch's fused kernel: one launch per step instead of a dozen per parameter group, and
    no list of intermediate tensors as large as the weights (gpu_memory counts that for the foreach one)."""
    if params.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(parameters, lr=params.learning_rate, weight_decay=1e-2, scale_parameter=False,
                         relative_step=False, warmup_init=False)
    return torch.optim.AdamW(parameters, lr=params.learning_rate, weight_decay=1e-2, **adamw_kernel(device))


class AdamWKernel(TypedDict, total=False):
    """torch.optim.AdamW's kernel choice; left out, torch's default."""

    fused: bool


def adamw_kernel(device: torch.device | None) -> AdamWKernel:
    """fused=True on CUDA; on the CPU torch's default (foreach), so CPU results stay as they were."""
    return {"fused": True} if device is not None and device.type == "cuda" else {}


def ema_device(params: FinetuneParams, device: torch.device) -> torch.device:
    return torch.device("cpu") if params.ema_device == "cpu" else device


def memory_estimate(denoiser: Denoiser, params: FinetuneParams, text_shape: tuple[int, ...]):
    """The estimated peak memory of fine-tuning this denoiser with `params` (mvcaug.models.gpu_memory)."""
    from mvcaug.models.gpu_memory import estimate_peak_memory

    latent = denoiser.unet.config.sample_size
    frozen = [denoiser.codec.vae] if hasattr(denoiser.codec, "vae") else []
    return estimate_peak_memory(denoiser.unet, frozen, params, (denoiser.unet.config.in_channels, latent, latent),
                                cast(tuple[int, int], tuple(text_shape[-2:])))  # (tokens, width) of the embeddings


def check_memory(denoiser: Denoiser, params: FinetuneParams, text_shape: tuple[int, ...], device: torch.device) -> None:
    """Log the estimated peak GPU memory of this run; stop with the knobs named when it cannot fit."""
    from mvcaug.models.gpu_memory import check_fits

    estimate = memory_estimate(denoiser, params, text_shape)
    capacity = torch.cuda.get_device_properties(device).total_memory
    log.info("estimated peak GPU memory: %s of %.1f GiB", estimate.describe(), capacity / 1024**3)
    check_fits(estimate, capacity, torch.cuda.get_device_name(device))
    torch.cuda.reset_peak_memory_stats(device)


def log_measured_memory(run: TrainingRun) -> None:
    """After the first step on CUDA: the peak the allocator saw, beside the estimate logged before it."""
    device = run.accelerator.device
    if device.type == "cuda":
        log.info("measured peak GPU memory after the first step: %.2f GiB (torch.cuda.max_memory_allocated)",
                 torch.cuda.max_memory_allocated(device) / 1024**3)


def optimizer_step(
    run: TrainingRun, denoiser: Denoiser, sampler: ConditionSampler, params: FinetuneParams
) -> float:
    """One optimiser step over gradient_accumulation_steps micro-batches; returns their mean loss."""
    total = torch.zeros((), device=run.accelerator.device)
    for _ in range(params.gradient_accumulation_steps):
        targets, conds, texts = sampler.batch(params.batch_size)
        text = torch.from_numpy(texts.astype(np.float32)).to(run.accelerator.device)
        with run.accelerator.accumulate(run.unet):
            device = run.accelerator.device
            z0 = run.latents.targets(targets, device, run.generator)
            cond = run.latents.conditions(conds, device)
            loss = latent_diffusion_loss(denoiser, run.unet, z0, cond, text, run.null, params, run.generator)
            run.accelerator.backward(loss)
            if run.accelerator.sync_gradients:
                run.accelerator.clip_grad_norm_(run.unet.parameters(), 1.0)
            run.optimizer.step()
            run.lr_schedule.step()
            run.optimizer.zero_grad(set_to_none=True)
        total += loss.detach()
    if run.ema is not None:
        parameters: Sequence[torch.Tensor] = trained(run.module)
        if params.ema_device == "cpu":  # EMAModel updates in place: give it the weights where its copy lives
            parameters = [p.detach().to("cpu") for p in parameters]
        run.ema.step(parameters)
    mean = run.accelerator.reduce(total / params.gradient_accumulation_steps, reduction="mean")
    return float(mean)


def save_run(
    run: TrainingRun, sampler: ConditionSampler, root: Path, inputs: RunInputs, losses: list[float]
) -> None:
    """A checkpoint of the run after len(losses) steps; every process sends its RNG state, the main one writes."""
    from accelerate.utils import gather_object

    rng = gather_object([{"sampler": sampler.rng.bit_generator.state, "torch": run.generator.get_state().tolist()}])
    if run.accelerator.is_main_process:
        names = [name for name, p in run.module.named_parameters() if p.requires_grad]
        tensors = {"unet": run.module.state_dict()}
        meta: dict[str, Any] = {**inputs.meta(), "losses": losses, "rng": rng}
        if run.ema is not None:
            tensors["ema"] = dict(zip(names, run.ema.shadow_params))
            meta["ema"] = {k: v for k, v in run.ema.state_dict().items() if k != "shadow_params"}
        states = {"optimizer": run.optimizer.state_dict(), "scheduler": run.lr_schedule.state_dict()}
        if run.accelerator.scaler is not None:  # fp16: the loss scale is part of the state
            states["scaler"] = run.accelerator.scaler.state_dict()
        save_checkpoint(root, len(losses), meta, tensors, states)
    run.accelerator.wait_for_everyone()


def resume_run(run: TrainingRun, sampler: ConditionSampler, root: Path, inputs: RunInputs) -> list[float]:
    """Restore the newest checkpoint of these inputs, or of a run that differed only in its process count
    (checkpoints of other inputs are moved aside, never deleted); its loss history."""
    checkpoint = find_resumable(root, inputs)
    run.accelerator.wait_for_everyone()  # everyone has chosen before the main process moves anything
    if run.accelerator.is_main_process:
        set_aside_others(root, inputs)
    if checkpoint is None:
        return []
    same_processes = checkpoint.meta.get("processes", run.accelerator.num_processes) == run.accelerator.num_processes
    # 1. Weights (and EMA weights), optimiser and schedule.
    run.module.load_state_dict(checkpoint.tensors("unet"))  # catalog-exempt: the checkpoint part saved above
    run.optimizer.load_state_dict(checkpoint.state("optimizer"))
    run.lr_schedule.load_state_dict(schedule_state(checkpoint, run.accelerator.num_processes))
    if run.accelerator.scaler is not None:
        run.accelerator.scaler.load_state_dict(checkpoint.state("scaler"))
    if run.ema is not None:
        shadow = checkpoint.tensors("ema")
        run.ema.load_state_dict(checkpoint.meta["ema"])
        where = run.ema.shadow_params[0].device  # the accelerator, or the CPU (finetune.ema_device)
        run.ema.shadow_params = [shadow[name].to(where) for name, p in run.module.named_parameters() if p.requires_grad]
    # 2. This process's streams, so the rest of the run draws what an uninterrupted one would.
    if same_processes:
        rng = checkpoint.meta["rng"][run.accelerator.process_index]
        sampler.rng.bit_generator.state = rng["sampler"]
        run.generator.set_state(torch.tensor(rng["torch"], dtype=torch.uint8))
        log.info("resuming from %s at step %d", checkpoint.path, checkpoint.step)
    else:
        new_streams(run, sampler, checkpoint.step)
        log.warning("resuming from %s at step %d, written by %s process(es), with %d: the weights, optimiser and "
                    "schedule carry over, but each process draws its own data stream, so from here on the batches "
                    "differ from an uninterrupted %s-process run", checkpoint.path, checkpoint.step,
                    checkpoint.meta.get("processes"), run.accelerator.num_processes, checkpoint.meta.get("processes"))
    return [float(v) for v in checkpoint.meta["losses"]]


def schedule_state(checkpoint: Checkpoint, processes: int) -> dict[str, Any]:
    """The LR schedule's state for `processes`: Accelerate steps it once per process per optimiser step
    (start_run scales it to match), so its position is the checkpoint's step times the process count."""
    state = checkpoint.state("scheduler")  # catalog-exempt: the LR schedule's checkpoint part
    if checkpoint.meta.get("processes", processes) != processes:
        state["last_epoch"] = checkpoint.step * processes
        state["_step_count"] = state["last_epoch"] + 1
    return state


def new_streams(run: TrainingRun, sampler: ConditionSampler, step: int) -> None:
    """Fresh per-process streams after a change of process count: seeded by the run's seed (through the
    streams start_run made), the process and the step, so they repeat none of the first steps' draws."""
    streams = np.random.SeedSequence([int(sampler.rng.integers(2**32)), run.accelerator.process_index, step])
    sampler.rng = np.random.default_rng(streams)
    run.generator.manual_seed(int(streams.generate_state(1)[0]))


def validation_conditions(
    sampler: ConditionSampler, images: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed (conditioning image, text) pairs: image i is from class i (cyclically), its first image
    and its first mix (its first caption when it has no mixes)."""
    conds, texts = [], []
    for i in range(count):
        c = sampler.classes[sampler.labels[i % len(sampler.labels)]]
        conds.append(images[int(c.image_indices[0])])
        texts.append(c.mixed_embeddings[0] if len(c.mixed_embeddings) else c.caption_embeddings[0])
    text = torch.from_numpy(np.stack(texts).astype(np.float32)).to(images.device)
    return torch.stack(conds), text


def validation_images(
    run: TrainingRun, denoiser: Denoiser, sampler: ConditionSampler, params: FinetuneParams
) -> torch.Tensor:
    """Images in [-1, 1] from fixed conditions and noise, with the EMA weights when on. Its own
    generator: the training streams stay untouched, so validating does not change the result."""
    from mvcaug.method.sampling import sample

    device = run.accelerator.device
    cond, text = validation_conditions(sampler, run.images, params.validation_images)
    cond, text = cond.to(device), text.to(device)
    size = run.images.shape[-1] // denoiser.codec.downscale
    shape = (len(cond), denoiser.codec.latent_channels, size, size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(params.seed)).to(device)
    with saved_weights(run):
        return sample(denoiser, cond if takes_image_condition(denoiser) else None, text, run.null, noise, "ddim",
                      params.validation_steps, params.validation_guidance_scale).cpu()


@contextmanager
def saved_weights(run: TrainingRun) -> Iterator[torch.nn.Module]:
    """The module in eval mode with the weights a save now would write (the EMA ones when on), restored to
    the training weights and mode afterwards."""
    module = run.module
    if run.ema is not None:
        run.ema.store(trained(module))
        run.ema.copy_to(trained(module))
    module.eval()
    try:
        yield module
    finally:
        module.train()
        if run.ema is not None:
            run.ema.restore(trained(module))


def train_denoiser(
    denoiser: Denoiser,
    images: torch.Tensor,
    sampler: ConditionSampler,
    null_text: np.ndarray,
    params: FinetuneParams,
    on_step: StepCallback | None = None,
    on_validation: ValidationCallback | None = None,
    checkpoint_dir: Path | None = None,
    data_digests: Mapping[str, str] | None = None,
    on_check: CheckCallback | None = None,
    check_every: int = 0,
) -> list[float]:
    """Optimise the U-Net with Accelerate; returns the loss of every step of the run (resumed ones too).

    With `checkpoint_dir`, a checkpoint is written every finetune.checkpoint_every steps and the run
    resumes from the newest one whose inputs (params, `data_digests`, code) match, the process count
    aside. `on_step` (every process) and `on_validation` (main process, every finetune.validation_every
    steps and at the end) are called after each step; `on_check` (main process, every `check_every` steps
    and at the end) with denoiser.unet holding the weights a save would write (the pretrain self-check).
    On return denoiser.unet holds the final (EMA) weights.
    """
    # 1. Accelerate, optimiser, schedule, EMA.
    run = start_run(denoiser, images, sampler, null_text, params)
    accelerator = run.accelerator
    # 2. Resume from the newest checkpoint of the same inputs.
    inputs = run_inputs(params, sampler.mix, data_digests or {}, accelerator.num_processes)
    losses = resume_run(run, sampler, Path(checkpoint_dir), inputs) if checkpoint_dir else []
    # 3. Optimise, checkpointing and validating on the way.
    run.unet.train()
    first_step = len(losses)
    progress = tqdm(range(len(losses), params.steps), desc="finetune", unit="step", mininterval=5,
                    disable=not accelerator.is_local_main_process)
    for step in progress:
        losses.append(optimizer_step(run, denoiser, sampler, params))
        done = step + 1
        if step == first_step:  # this process's first step (a resumed run's too): the peak is reached by now
            log_measured_memory(run)
        if checkpoint_dir and is_due(done, params.checkpoint_every, params.steps):
            save_run(run, sampler, Path(checkpoint_dir), inputs, losses)
        if on_validation and accelerator.is_main_process and is_due(done, params.validation_every, params.steps):
            on_validation(done, validation_images(run, denoiser, sampler, params))
        if on_check and accelerator.is_main_process and is_due(done, check_every, params.steps):
            with saved_weights(run):
                on_check(done)
        if on_step is not None:
            on_step(step, losses[-1])
    # 4. The final weights: the EMA ones when on, unwrapped from Accelerate.
    accelerator.wait_for_everyone()
    module = accelerator.unwrap_model(run.unet, keep_fp32_wrapper=False)
    if run.ema is not None:
        run.ema.copy_to(trained(module))
    if params.gradient_checkpointing:
        module.disable_gradient_checkpointing()
    denoiser.unet = module.eval()
    return losses


def is_due(done: int, every: int, total: int) -> bool:
    """Every `every` steps (0 = never), and at the last step."""
    return every > 0 and (done % every == 0 or done == total)


def validation_grid(images: torch.Tensor, columns: int = 10) -> Image.Image:
    """One image of the (n, C, H, W) batch in [-1, 1], `columns` per row, for dvclive."""
    tiles = [to_image(image) for image in images]
    width, height = tiles[0].size
    columns = min(columns, len(tiles))
    grid = Image.new(tiles[0].mode, (columns * width, -(-len(tiles) // columns) * height))
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % columns) * width, (i // columns) * height))
    return grid
