"""A user's caption file (caption.backend: file): found and read here, parsed in mvcaug.method.caption."""

from __future__ import annotations

from pathlib import Path

from mvcaug.core.params import CaptionParams, PrepareParams
from mvcaug.method.caption import CAPTION_FILES, CaptionError, parse_caption_file

__all__ = ["read_caption_file", "find_caption_file"]


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
