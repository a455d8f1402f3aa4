"""Where a pretrained model comes from (a local folder or a hub id), checked before anything loads.

A value that is plainly a local path (absolute, ./ or ../, ~, several parts, or an existing file) but not
a folder is a typo or a missing download, never a hub id: it fails at once with the param named,
instead of reaching the hub client ("Repo id must be in the form ..."). A relative local path is resolved
against the project root, so every process that reads it (a Dask worker with another working directory)
finds the same folder. Offline hints mention HF_HUB_OFFLINE only when it is set.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mvcaug.core.errors import UserError

__all__ = ["ModelError", "looks_local", "local_folder", "resolve_source", "load_from_source"]

T = TypeVar("T")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ModelError(UserError, RuntimeError):
    """A model folder or hub id cannot be loaded; the message names the param and how to provide it."""


def looks_local(value: str) -> bool:
    """Whether a model source is meant as a local path rather than a hub id ("org/name")."""
    path = Path(value).expanduser()
    return path.is_absolute() or value.startswith((".", "~")) or value.count("/") > 1 or path.exists()


def local_folder(value: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The folder a source names (relative paths against the project root, then the working directory),
    or None when it names none."""
    path = Path(value).expanduser()
    for candidate in ((path,) if path.is_absolute() else (root / path, path)):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def offline_hint() -> str:
    """How a hub id could be fetched, in the words that fit this environment."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return "HF_HUB_OFFLINE is set, so hub ids are not downloaded: use a local folder or unset it"
    return "a hub id needs network access once (`hf download <id> --local-dir <folder>`), then point the param at that folder"


def resolve_source(value: str, key: str, what: str) -> str:
    """The local folder (absolute) or the hub id a param names; fails early, naming `key`, when it is
    empty or a local path that is not a folder. `what` describes the expected folder layout."""
    if not value:
        raise ModelError(f"{key} is empty; set it to {what}")
    folder = local_folder(value)
    if folder is not None:
        return str(folder)
    if looks_local(value):
        raise ModelError(f"{key} '{value}' is not a folder; set it to {what} ({offline_hint()})")
    return value


def load_from_source(load: Callable[..., T], value: str, key: str, what: str, **kwargs) -> T:
    """`load(source, **kwargs)`, every loading failure turned into a ModelError naming `key` and the fix."""
    source = resolve_source(value, key, what)
    try:
        return load(source, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        reason = str(err).strip().splitlines()[0].rstrip(".")
        part = f" ({kwargs['subfolder']}/)" if kwargs.get("subfolder") else ""
        raise ModelError(f"{key}: cannot load '{value}'{part}: {reason}. Set it to {what}; {offline_hint()}") from err
