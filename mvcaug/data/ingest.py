"""Which new images to copy into a dataset folder, and where: content-deduplicated and contained.

The listing, hashing and copying are the task's (tasks/ingest.py); here are the decisions, so they are
tested without files: an image whose content (sha256) the dataset already holds is skipped, a name taken
by other content gets the hash appended, and no target may leave the dataset folder (a class folder
that is a symbolic link pointing elsewhere is refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mvcaug.core.errors import UserError

__all__ = ["IngestError", "Candidate", "contained_target", "plan_copies"]


class IngestError(UserError, ValueError):
    """New images cannot be ingested as asked; the message names the folder and the fix."""


@dataclass(frozen=True)
class Candidate:
    """One new image: its file, its class (the subfolder it came from) and its content hash."""

    path: Path
    label: str
    sha256: str


@dataclass(frozen=True)
class Copy:
    """Copy `source` to `target` (inside the dataset) for class `label`."""

    source: Path
    target: Path
    label: str


def contained_target(dataset: Path, label: str, name: str) -> Path:
    """dataset/<label>/<name>, refusing any path that resolves outside the dataset folder (through
    a symbolic link, `..` or an absolute name)."""
    root = dataset.resolve()
    target = (dataset / label / name).resolve()
    if not target.is_relative_to(root) or target.parent.parent != root:
        raise IngestError(
            f"{dataset / label}: resolves to {target.parent}, outside the dataset folder {root}; "
            "class folders must be plain folders inside it (remove the link)"
        )
    return dataset / label / name


def plan_copies(candidates: list[Candidate], known: set[str], dataset: Path,
                taken: set[Path]) -> tuple[list[Copy], list[Candidate]]:
    """(copies to make, candidates skipped as already present). `known`: content hashes in the dataset;
    `taken`: existing file paths there. Two candidates with the same content are copied once."""
    copies, skipped, seen = [], [], set(known)
    for candidate in candidates:
        if candidate.sha256 in seen:
            skipped.append(candidate)
            continue
        target = contained_target(dataset, candidate.label, candidate.path.name)
        if target in taken:
            target = contained_target(dataset, candidate.label,
                                      f"{candidate.path.stem}-{candidate.sha256[:12]}{candidate.path.suffix}")
        copies.append(Copy(candidate.path, target, candidate.label))
        seen.add(candidate.sha256)
        taken.add(target)
    return copies, skipped
