"""Device and dtype choice, in one place so every stage agrees; and what one worker process holds: its
own GPU, and each model or dataset loaded once."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from mvcaug.core.errors import UserError

if TYPE_CHECKING:
    import torch

__all__ = ["UnpinnedWorker", "device_label", "resolve_device", "native_bf16", "auto_dtype", "resolve_dtype",
    "autocast_precision", "autocast", "choose_worker_device",
    "started_by_dask_cuda", "worker_device", "cluster_gpus", "load_once"]

T = TypeVar("T")
LOAD_LOCK = threading.RLock()
"""Held while a load_once loader runs: one load at a time per process (re-entrant: loaders nest)."""


class UnpinnedWorker(UserError, RuntimeError):
    """A Dask worker sees several GPUs and nothing says which one is its own."""


def device_label(device: torch.device | str) -> str:
    """"cpu", or the GPU's kind for a CUDA device ("cuda: NVIDIA H100 80GB HBM3"), so rates measured on
    different cards never add up as one."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device.type


def resolve_device(name: str = "auto") -> torch.device:
    """auto picks CUDA when present, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bfloat16 in hardware: a GPU that supports it (Ampere on), or a CPU with AMX
    tiles (Intel Xeon from Sapphire Rapids on). Elsewhere bf16 is emulated and slower than float32 on a CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    # torch.cpu's capability checks are underscored but are what torch itself asks (inductor, oneDNN's bf16 path)
    return device.type == "cpu" and bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def auto_uses_bf16(device: torch.device, bf16: bool | None = None) -> bool:
    """What auto chooses: bf16 where the device computes it natively (native_bf16), unless `bf16` says (tests,
    or a device other than this process's)."""
    return native_bf16(device) if bf16 is None else bf16


def auto_dtype(device: torch.device, bf16: bool | None = None) -> torch.dtype:
    """bf16 where auto_uses_bf16, else fp16 on a GPU, fp32 on a CPU. On this project's 2-core AMX machine the
    default's generation took 48.5 s in bf16 against 67.7 s in fp32."""
    import torch

    if auto_uses_bf16(device, bf16):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.float32


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto follows auto_dtype; an explicit name is taken as it is."""
    import torch

    if name == "auto":
        return auto_dtype(device)
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def autocast_precision(setting: str, device: torch.device, bf16: bool | None = None) -> str:
    """An autocast setting as it runs: "no" or "bf16"; auto is bf16 where auto_uses_bf16, else no. Read for a
    classifier's train.model_settings.<model>.mixed_precision (fit_cell) and for pretrain.check_precision (the
    self-check's sampling)."""
    if setting != "auto":
        return setting
    return "bf16" if auto_uses_bf16(device, bf16) else "no"


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of what runs under an autocast_precision: bfloat16 for bf16, else off."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def choose_worker_device(gpus_seen: int, in_dask_worker: bool = False, dask_cuda_worker: bool = False,
                         visible: str | None = None) -> torch.device:
    """The device of one worker process, from what it sees (pure, so every case is testable without a GPU).

    gpus_seen is torch.cuda.device_count(), which already honours CUDA_VISIBLE_DEVICES (`visible`, named in
    the error only). No GPU: the CPU. This process alone, or a worker that sees one GPU (a worker pinned by
    CUDA_VISIBLE_DEVICES): cuda:0. A dask-cuda worker sees every GPU with its own listed first, so cuda:0
    is its own. Any other Dask worker that sees several GPUs would share cuda:0 with its neighbours (two
    models on one card, the others idle), so it is refused.
    """
    import torch

    if gpus_seen == 0:
        return torch.device("cpu")
    if gpus_seen == 1 or not in_dask_worker or dask_cuda_worker:
        return torch.device("cuda", 0)
    seen = f"CUDA_VISIBLE_DEVICES={visible}" if visible else "CUDA_VISIBLE_DEVICES unset"
    raise UnpinnedWorker(
        f"a Dask worker sees {gpus_seen} GPUs ({seen}) and none is its own, so workers would share one; start "
        "one worker per GPU with `dask cuda worker` (pip install '.[gpu]') or `CUDA_VISIBLE_DEVICES=<gpu> dask "
        "worker ...`, or leave dask_address empty for a LocalCluster pinned to the GPUs")


def started_by_dask_cuda(worker: object) -> bool:
    """Whether a Dask worker was started by dask-cuda (LocalCUDACluster, `dask cuda worker`): every such
    worker carries dask-cuda's plugins, and dask-cuda orders its CUDA_VISIBLE_DEVICES own GPU first."""
    plugins = getattr(worker, "plugins", {}) or {}
    return any(type(plugin).__module__.startswith("dask_cuda") for plugin in plugins.values())


def worker_device() -> torch.device:
    """This process's device, by choose_worker_device: inside a Dask worker or not, started by dask-cuda
    or not, and how many GPUs it sees."""
    import torch

    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # no distributed, or not inside a Dask worker
        worker = None
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return choose_worker_device(gpus, worker is not None, worker is not None and started_by_dask_cuda(worker),
                                os.environ.get("CUDA_VISIBLE_DEVICES"))


def cluster_gpus(visible: str | None, gpus_seen: int) -> list[str]:
    """The GPUs a LocalCluster started here pins its workers to, one each: the ids this process sees
    (CUDA_VISIBLE_DEVICES entries when it is set, so a worker never escapes the user's choice; else 0..n-1)."""
    if gpus_seen == 0:
        return []
    named = [d.strip() for d in (visible or "").split(",") if d.strip()]
    return named[:gpus_seen] if named else [str(i) for i in range(gpus_seen)]


def load_once(fn: Callable[..., T]) -> Callable[..., T]:
    """fn cached per process and arguments, and computed under one lock: functools.lru_cache alone lets two
    threads that ask at once both load the model (two copies on one GPU). Re-entrant, so one cached
    loader may call another."""
    cached = functools.lru_cache(maxsize=4)(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with LOAD_LOCK:
            return cached(*args, **kwargs)

    wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]  # as lru_cache's own wrapper has
    return wrapper

