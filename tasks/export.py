"""Tasks of the export: read what the stages wrote, and write the ImageFolder into a temporary sibling
folder that one rename puts in place (an interrupted export leaves no half folder)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.core.errors import MissingInputError, UserError
from mvcaug.data.export import METADATA, ExportFile, check_unique, real_files, synthetic_files
from mvcaug.io.images import read_manifest
from mvcaug.core.params import Params
from mvcaug.data.synthetic_sets import MVC, SyntheticSet
from mvcaug.io.synthetic_sets import decision_rows

__all__ = ["ExportError", "plan_export", "write_export"]


class ExportError(UserError, ValueError):
    """The export target cannot be written as asked."""


@task(cache_policy=NO_CACHE)
def plan_export(params: Params, with_real: bool, include_dropped: bool) -> list[ExportFile]:
    """The files to export: the filter's kept synthetic images (all with include_dropped), and the real
    training images with their captions (with_real)."""
    paths = params.paths
    synthetic = SyntheticSet.named(MVC, paths)
    files = synthetic_files(decision_rows(synthetic, paths), synthetic.folder, include_dropped)
    if with_real:
        captions_file = Path(paths.captions)
        if not captions_file.is_file():
            raise MissingInputError(f"{captions_file}: no captions; run the caption stage first", stage="caption")
        captions = dict(zip(*(pq.read_table(captions_file, columns=["id", "caption"]).column(c).to_pylist()
                              for c in ("id", "caption"))))
        files += real_files(read_manifest(paths.prepared).to_pylist(), captions, paths.prepared)
    check_unique(files)
    return files


@task(cache_policy=NO_CACHE)
def write_export(files: list[ExportFile], out: str, force: bool) -> dict[str, int]:
    """OUT/<class>/<file> (byte-for-byte copies) and OUT/metadata.jsonl; returns images per class."""
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise ExportError(f"{target} exists and is not empty; choose another folder or pass --force to replace it")
    tmp = target.with_name(f".{target.name}.export-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for file in files:
            (tmp / file.target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(file.root) / file.source, tmp / file.target)
        (tmp / METADATA).write_text("".join(json.dumps(f.record, sort_keys=True) + "\n" for f in files))
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts: dict[str, int] = {}
    for file in files:
        counts[file.record["label"]] = counts.get(file.record["label"], 0) + 1
    return counts
