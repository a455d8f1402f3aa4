"""What an export of the synthetic set holds: a Hugging Face ImageFolder (class folders + metadata.jsonl)
that `datasets.load_dataset("imagefolder", data_dir=...)` and torchvision's `ImageFolder` both read.

Pure: rows in (the filter's decisions, the real training split and its captions), a list of files to
copy with their metadata records out. Names are unique inside each class folder: synthetic files are
`syn-<shard>-<index>.png`, real ones `real-<id>.png`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = ["METADATA", "ExportFile", "synthetic_files", "real_files", "check_unique"]

METADATA = "metadata.jsonl"


@dataclass(frozen=True)
class ExportFile:
    """Copy `source` (a path relative to its stage folder, `root`) to `target` (relative to the export)."""

    root: str
    source: str
    target: str
    record: dict


def synthetic_files(decisions: Sequence[dict], folder: str, include_dropped: bool = False) -> list[ExportFile]:
    """The kept synthetic images (all, with include_dropped), each with its provenance."""
    files = []
    for row in decisions:
        if not row["kept"] and not include_dropped:
            continue
        name = f"syn-{PurePosixPath(row['path']).stem}.png"
        target = f"{row['label']}/{name}"
        files.append(ExportFile(folder, row["path"], target, {
            "file_name": target, "label": row["label"], "source": "synthetic", "caption": "",
            "mixed_id": row["mixed_id"], "seed": int(row["seed"]), "cond_id": row["cond_id"],
            "kept": bool(row["kept"]), "reason": row["reason"]}))
    return files


def real_files(manifest: Sequence[dict], captions: dict[str, str], folder: str) -> list[ExportFile]:
    """The real training images, each with its caption."""
    files = []
    for row in manifest:
        if row["split"] != "train":
            continue
        target = f"{row['label']}/real-{row['id']}.png"
        files.append(ExportFile(folder, row["path"], target, {
            "file_name": target, "label": row["label"], "source": "real", "caption": captions.get(row["id"], ""),
            "mixed_id": "", "seed": None, "cond_id": "", "kept": True, "reason": ""}))
    return files


def check_unique(files: Sequence[ExportFile]) -> None:
    targets = [f.target for f in files]
    duplicates = sorted({t for t in targets if targets.count(t) > 1})
    if duplicates:
        raise ValueError(f"two files would be exported as {duplicates[0]}")
