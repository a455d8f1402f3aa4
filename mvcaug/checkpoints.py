"""Resumable training checkpoints, written without pickle.

A checkpoint is a folder `<root>/step-XXXXXX/`:

- `<name>.safetensors`: tensors (unet, ema, optimizer), loadable without running code;
- `<name>.json`: the non-tensor structure of a state dict (optimizer, scheduler), where each tensor
  is a reference into `<name>.safetensors`;
- `state.json`: the step, the run's fingerprint, the loss history and the RNG states.

It is written into a hidden temporary folder and renamed into place, so a crash never leaves a
half-written checkpoint that a rerun would resume from. The fingerprint (a hash of every input that
changes the trained weights) decides which checkpoints a rerun may resume from.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mvcaug.digests import code_digest, json_digest
from mvcaug.params import FinetuneParams, MixParams

log = logging.getLogger(__name__)

FORMAT = 1
PREFIX = "step-"
KEEP = 1
"""Newest checkpoints kept: an older one is removed only once a newer one is complete (SD: ~14 GB each)."""
RUN_ONLY_FIELDS = frozenset({
    "checkpoint_every", "gradient_checkpointing", "validation_every", "validation_images",
    "validation_steps", "validation_guidance_scale",
})
"""FinetuneParams fields that do not change the trained weights, so changing them keeps checkpoints."""
CODE_ENTRIES = ("mvcaug.finetune",)
"""Modules whose import closure computes the trained weights: a change to any of them invalidates checkpoints
(DVC reruns the stage; it must not resume old maths)."""
CODE_LIBRARIES = ("torch", "diffusers", "accelerate")
"""Libraries whose version changes the trained weights."""


def run_fingerprint(
    params: FinetuneParams, mix: MixParams, data_digests: Mapping[str, str], processes: int = 1
) -> str:
    """A hash of what determines the trained weights: params, data, code, library versions and the
    process count (each process draws its own stream)."""
    return json_digest({
        "finetune": {k: v for k, v in dataclasses.asdict(params).items() if k not in RUN_ONLY_FIELDS},
        "mix": dataclasses.asdict(mix),
        "data": dict(sorted(data_digests.items())),
        "code": code_digest(CODE_ENTRIES, CODE_LIBRARIES),
        "processes": processes,
    })


def flatten_state(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON-able structure, tensors by name) for a nested state dict. Dicts, tuples and tensors are
    tagged so `unflatten_state` rebuilds the exact types (int keys, tuple betas); anything that
    would need pickle raises TypeError."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[path] = value.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(value, dict):
            bad = [k for k in value if not isinstance(k, (str, int)) or isinstance(k, bool)]
            if bad:
                raise TypeError(f"{path or 'state'}: key {bad[0]!r} is neither str nor int")
            return {"__dict__": [[k, encode(v, f"{path}.{k}" if path else str(k))] for k, v in value.items()]}
        if isinstance(value, (list, tuple)):
            items = [encode(v, f"{path}.{i}") for i, v in enumerate(value)]
            return {"__tuple__": items} if isinstance(value, tuple) else items
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"{path or 'state'}: {type(value).__name__} cannot be saved without pickle")

    return encode(state, ""), tensors


def unflatten_state(structure: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The inverse of flatten_state."""
    if isinstance(structure, list):
        return [unflatten_state(v, tensors) for v in structure]
    if isinstance(structure, dict):
        if "__tensor__" in structure:
            return tensors[structure["__tensor__"]]
        if "__tuple__" in structure:
            return tuple(unflatten_state(v, tensors) for v in structure["__tuple__"])
        return {k: unflatten_state(v, tensors) for k, v in structure["__dict__"]}
    return structure


@dataclass
class Checkpoint:
    """One checkpoint folder and its state.json."""

    path: Path
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        return load_file(self.path / f"{name}.safetensors")

    def state(self, name: str) -> Any:
        structure = json.loads((self.path / f"{name}.json").read_text())
        tensor_file = self.path / f"{name}.safetensors"
        return unflatten_state(structure, load_file(tensor_file) if tensor_file.is_file() else {})


def save_checkpoint(
    root: Path,
    step: int,
    meta: Mapping[str, Any],
    tensors: Mapping[str, Mapping[str, torch.Tensor]],
    states: Mapping[str, Any],
) -> Path:
    """Write `<root>/step-XXXXXX/` atomically: `tensors` as <name>.safetensors, `states` (nested state
    dicts) as <name>.json + <name>.safetensors, `meta` plus the step as state.json. Keeps the newest KEEP."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        # 1. Plain tensor dicts (model weights).
        for name, tensor_dict in tensors.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in tensor_dict.items()}, tmp / f"{name}.safetensors")
        # 2. Nested states: structure as JSON, tensors as safetensors.
        for name, state in states.items():
            structure, state_tensors = flatten_state(state)
            (tmp / f"{name}.json").write_text(json.dumps(structure))
            if state_tensors:
                save_file(state_tensors, tmp / f"{name}.safetensors")
        (tmp / "state.json").write_text(json.dumps({**meta, "format": FORMAT, "step": step}, indent=1))
        # 3. On disk before it becomes visible; then one rename makes it visible.
        _fsync_folder(tmp)
        if final.exists():
            discard(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(root)[:-KEEP]:
        discard(old.path)
    log.info("checkpoint %s", final)
    return final


def _fsync_folder(folder: Path) -> None:
    for path in [*folder.iterdir(), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def discard(path: Path) -> None:
    """Remove a checkpoint folder by renaming it out of sight first, so a crash midway never leaves
    a partly deleted checkpoint that looks resumable."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Checkpoint]:
    """Readable checkpoints under root, oldest first."""
    found = []
    for path in sorted(root.glob(f"{PREFIX}*")) if root.is_dir() else []:
        try:
            meta = json.loads((path / "state.json").read_text())
        except (OSError, ValueError):
            log.warning("%s: no readable state.json, ignored", path)
            continue
        if meta.get("format") == FORMAT:
            found.append(Checkpoint(path, meta))
    return sorted(found, key=lambda c: c.step)


def find_resumable(root: Path, fingerprint: str) -> Checkpoint | None:
    """The newest checkpoint written by a run with the same fingerprint."""
    matching = [c for c in list_checkpoints(root) if c.meta.get("fingerprint") == fingerprint]
    return matching[-1] if matching else None


def remove_stale(root: Path, fingerprint: str) -> None:
    """Remove leftover temporary folders and checkpoints of runs with other inputs."""
    if not root.is_dir():
        return
    keep = {c.path for c in list_checkpoints(root) if c.meta.get("fingerprint") == fingerprint}
    for path in root.iterdir():
        if path.is_dir() and path not in keep:
            log.info("removing stale checkpoint %s", path)
            shutil.rmtree(path, ignore_errors=True)
