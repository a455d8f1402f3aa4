"""Tasks of ingestion: copy new images into the dataset folder, and announce their arrival."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.atomic import atomic_path
from mvcaug.io.digests import file_sha256
from mvcaug.data.ingest import Candidate, IngestError, plan_copies
from mvcaug.data.prepare import DatasetError, is_image_file
from mvcaug.io.image_folders import open_image

__all__ = ["DATA_EVENT", "ingest_images", "announce_arrival"]

log = logging.getLogger("mvcaug.data.ingest")

DATA_EVENT = "mvcaug.data.arrived"


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


@task(cache_policy=NO_CACHE)
def ingest_images(source: str, dataset: str) -> dict[str, int]:
    """Copy images from source/<class>/ into dataset/<class>/ unless their content is already there.

    Each copy is a temp file beside its target, then a rename, so an interrupted ingest never leaves a
    partial image; unreadable images are skipped with a warning. Returns the number of new files per class.
    """
    src, dst = Path(source), Path(dataset)
    if not src.is_dir():
        raise IngestError(f"{src}: no such folder; pass a folder of class subfolders")
    class_dirs = [d for d in sorted(dst.iterdir()) if d.is_dir()] if dst.is_dir() else []
    existing = [p for d in class_dirs for p in images_in(d)]
    known = {file_sha256(p) for p in existing}
    for stray in images_in(src):
        log.warning("%s: not in a class subfolder, skipped", stray)
    candidates = []
    for class_dir in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in images_in(class_dir):
            try:
                open_image(file)
            except DatasetError as err:
                log.warning("skipped: %s", err)
                continue
            candidates.append(Candidate(file, class_dir.name, file_sha256(file)))
    copies, skipped = plan_copies(candidates, known, dst, set(existing))
    for candidate in skipped:
        log.info("%s: already in the dataset (same content), skipped", candidate.path)
    added: dict[str, int] = {}
    for copy in copies:
        with atomic_path(copy.target) as tmp:
            shutil.copyfile(copy.source, tmp)
        added[copy.label] = added.get(copy.label, 0) + 1
    log.info("ingested %d new images into %s: %s", sum(added.values()), dst, added or "none")
    return added


@task(cache_policy=NO_CACHE)
def announce_arrival(dataset: str, added: dict[str, int]) -> None:
    """Emit the Prefect event `mvcaug.data.arrived` for dataset folder `dataset` (the deployment's trigger)."""
    from prefect.events import emit_event

    name = Path(dataset).name
    event = emit_event(
        event=DATA_EVENT,
        resource={"prefect.resource.id": f"mvcaug.dataset.{name}", "prefect.resource.name": name},
        payload={"new_files": sum(added.values()), "per_class": added, "folder": str(dataset)},
    )
    log.info("emitted %s for mvcaug.dataset.%s (%d new files)%s", DATA_EVENT, name, sum(added.values()),
             "" if event else " (no Prefect API to receive it)")
