"""Captioners built from what is outside the code: a user's caption file (caption.backend: file), found and read
here and parsed in mvcaug.method.caption, or BLIP-2's weights; the captioners themselves live in mvcaug.method."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mvcaug.core.params import CaptionParams, PrepareParams
from mvcaug.method.caption import (
    CAPTION_FILES, AttributeCaptioner, CaptionError, Captioner, FileCaptioner, parse_caption_file,
)

__all__ = ["read_caption_file", "find_caption_file", "file_captioner", "build_captioner"]


def read_caption_file(path: Path) -> dict[str, str]:
    """file_name -> caption from metadata.jsonl or captions.csv (parse_caption_file); a missing file is a
    CaptionError naming it."""
    if not path.is_file():
        raise CaptionError(f"{path}: captions file not found; write metadata.jsonl or captions.csv there")
    return parse_caption_file(path, path.read_bytes())


def find_caption_file(params: CaptionParams, prepare: PrepareParams) -> Path:
    """caption.captions_file, or the metadata.jsonl or captions.csv in it when it names a folder.

    The path is a DVC dep of the caption stage (dvc.yaml), so editing the caption file reruns it; DVC
    cannot depend on an empty path, hence a folder (the image folder by default) rather than "look there"."""
    path = Path(params.captions_file)  # never empty: mvcaug.core.params refuses that when params are loaded
    if not path.is_dir():
        return path
    for name in CAPTION_FILES:
        if (path / name).is_file():
            return path / name
    beside = [Path(prepare.image_folder) / name for name in CAPTION_FILES]
    found = [candidate for candidate in beside if candidate.is_file()]
    hint = f"set caption.captions_file: {found[0]}" if found else \
        "add one, or set caption.captions_file to your caption file (or the folder that holds it)"
    raise CaptionError(f"{path}: no metadata.jsonl or captions.csv for caption.backend=file; {hint}")


def file_captioner(params: CaptionParams, prepare: PrepareParams) -> FileCaptioner:
    """The file backend's captioner: the caption file caption.captions_file names, read."""
    path = find_caption_file(params, prepare)
    return FileCaptioner(path, read_caption_file(path))


def build_captioner(params: CaptionParams, prepare: PrepareParams) -> Captioner:
    """Construct the backend named by caption.backend."""
    factories: dict[str, Callable[[], Captioner]] = {
        "attributes": AttributeCaptioner,
        "file": lambda: file_captioner(params, prepare),
    }
    if params.backend == "blip2":
        from mvcaug.method.blip2 import Blip2Captioner

        return Blip2Captioner(params)
    if params.backend not in factories:
        raise CaptionError(f"unknown caption.backend '{params.backend}'; use attributes, file or blip2")
    return factories[params.backend]()
