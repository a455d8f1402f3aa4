"""Resumable training checkpoints, written without pickle.

A checkpoint is a folder `<root>/step-XXXXXX/`:

- `<name>.safetensors`: tensors (unet, ema, optimizer), loadable without running code;
- `<name>.json`: the non-tensor structure of a state dict (optimizer, scheduler), where each tensor
  is a reference into `<name>.safetensors`;
- `state.json`: the step, the run's digest, the loss history and the RNG states.

It is written into a hidden temporary folder and renamed into place, so a crash never leaves a
half-written checkpoint that a rerun would resume from. The digest (a hash of every input that
changes the trained weights) decides which checkpoints a rerun may resume from; state.json also keeps
those inputs part by part, so a rerun can say what differs.

A checkpoint is never deleted for being another run's: a run that differs only in its process count
(a 4-GPU `accelerate launch` resumed by a plain `dvc repro`) resumes it, with a warning that the data
stream changes; any other is moved aside into `<root>-not-resumed/` with one line saying why it is not
resumed and how to remove it (a Stable Diffusion checkpoint is hours of training).
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

from mvcaug.io.digests import code_digest, json_digest, library_versions
from mvcaug.core.params import FinetuneParams, MixParams

__all__ = ["CODE_ENTRIES", "NOT_RESUMED", "RunInputs", "run_inputs", "flatten_state", "unflatten_state",
    "Checkpoint", "save_checkpoint", "list_checkpoints", "find_resumable", "set_aside_others"]

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
CODE_ENTRIES = ("mvcaug.method.finetune",)
"""Modules whose import closure computes the trained weights: a change to any of them invalidates checkpoints
(DVC reruns the stage; it must not resume old maths)."""
CODE_LIBRARIES = ("torch", "diffusers", "accelerate")
"""Libraries whose version changes the trained weights."""


NOT_RESUMED = "-not-resumed"
"""Suffix of the sibling folder (`<root>-not-resumed/`) that holds the checkpoints of runs with other inputs."""
PART_NAMES = {"finetune": "finetune params", "mix": "mix params", "data": "input data",
              "code": "code (mvcaug.method.finetune and its imports)", "libraries": "library versions"}


@dataclass(frozen=True)
class RunInputs:
    """What determines the trained weights, part by part (params, data digests, code digest, library
    versions), and the process count (each process draws its own stream): kept apart so that a rerun can
    resume when only the process count differs and say which part differs otherwise."""

    parts: dict[str, Any]
    processes: int

    @property
    def digest(self) -> str:
        return json_digest({**self.parts, "processes": self.processes})

    def meta(self) -> dict[str, Any]:
        """What state.json records of the run's inputs."""
        return {"digest": self.digest, "inputs": self.parts, "processes": self.processes}

    def differences(self, meta: Mapping[str, Any]) -> list[str]:
        """The parts (and "processes") in which a checkpoint's state.json differs from these inputs."""
        if meta.get("digest") == self.digest:
            return []
        theirs = meta.get("inputs")
        if not isinstance(theirs, dict):
            return ["inputs"]  # written before inputs were recorded part by part
        keys = sorted(set(theirs) | set(self.parts))
        differ = [key for key in keys if theirs.get(key) != self.parts.get(key)]
        return differ + (["processes"] if meta.get("processes") != self.processes else [])

    def describe(self, meta: Mapping[str, Any]) -> str:
        """The differences in words: 'finetune params (learning_rate, steps), process count (4, now 1)'."""
        words = []
        inputs = meta.get("inputs")
        theirs = inputs if isinstance(inputs, dict) else {}
        for key in self.differences(meta):
            if key == "processes":
                words.append(f"process count ({meta.get('processes')}, now {self.processes})")
            elif key == "inputs":
                words.append("inputs not recorded (an older mvcaug)")
            else:
                changed = _changed_keys(theirs.get(key), self.parts.get(key))
                words.append(PART_NAMES.get(key, key) + (f" ({', '.join(changed)})" if changed else ""))
        return ", ".join(words)


def _changed_keys(old: Any, new: Any) -> list[str]:
    """The keys whose values differ, when both are dicts (params, data digests, library versions)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return []
    return sorted(key for key in {*old, *new} if old.get(key) != new.get(key))


def run_inputs(
    params: FinetuneParams, mix: MixParams, data_digests: Mapping[str, str], processes: int = 1
) -> RunInputs:
    """The run's inputs: params (without RUN_ONLY_FIELDS), data digests, code digest, library versions
    and the process count, normalised as JSON stores them so they compare equal to a state.json's."""
    parts = {
        "finetune": {k: v for k, v in dataclasses.asdict(params).items() if k not in RUN_ONLY_FIELDS},
        "mix": dataclasses.asdict(mix),
        "data": dict(sorted(data_digests.items())),
        "code": code_digest(CODE_ENTRIES),
        "libraries": library_versions(CODE_LIBRARIES),
    }
    return RunInputs(json.loads(json.dumps(parts, sort_keys=True, default=str)), processes)


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


def find_resumable(root: Path, inputs: RunInputs) -> Checkpoint | None:
    """The newest checkpoint of a run with the same inputs; else the newest of a run that differs only in
    its process count (its weights, optimiser and schedule carry over; the data stream changes)."""
    checkpoints = list_checkpoints(root)
    same = [c for c in checkpoints if c.meta.get("digest") == inputs.digest]
    if same:
        return same[-1]
    processes_only = [c for c in checkpoints if inputs.differences(c.meta) == ["processes"]]
    return processes_only[-1] if processes_only else None


def set_aside_others(root: Path, inputs: RunInputs) -> list[Path]:
    """Clear `root` for this run without deleting another run's work: leftovers of an interrupted save or
    removal (.tmp-*, .trash-*) are removed; a checkpoint that this run may not resume (inputs other than
    the process count differ, or unreadable) is moved into `<root>-not-resumed/`, with one warning line
    each saying why and how to remove it. Returns the new places of those moved."""
    if not root.is_dir():
        return []
    readable = {c.path: c for c in list_checkpoints(root)}
    ours = {path for path, c in readable.items() if set(inputs.differences(c.meta)) <= {"processes"}}
    moved = []
    for path in sorted(root.iterdir()):
        if path.name.startswith((".tmp-", ".trash-")) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)  # never complete: a save or removal cut short
        elif path.name.startswith(PREFIX) and path not in ours:
            checkpoint = readable.get(path)
            why = inputs.describe(checkpoint.meta) if checkpoint else "no readable state.json of this format"
            moved.append(_set_aside(root, path, checkpoint, why))
    return moved


def _set_aside(root: Path, path: Path, checkpoint: Checkpoint | None, why: str) -> Path:
    """Move one checkpoint into `<root>-not-resumed/` (a rename: instant, whatever its size) and say so."""
    folder = root.with_name(root.name + NOT_RESUMED)
    folder.mkdir(parents=True, exist_ok=True)
    tag = str(checkpoint.meta.get("digest", "unknown"))[:12] if checkpoint else "unreadable"
    target = folder / f"{path.name}-{tag}"
    if target.exists():
        target = folder / f"{path.name}-{tag}-{os.getpid()}"
    os.rename(path, target)
    log.warning("checkpoint %s is not resumed: its run differs in %s; kept as %s (remove it with `rm -r %s` "
                "when it is not needed)", path, why, target, folder)
    return target
