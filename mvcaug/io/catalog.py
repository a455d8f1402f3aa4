"""The artifact catalog: the name of every file and folder the stages write inside their output folders.

The names are defined once, in artifacts.yaml beside this module, which dvc.yaml also reads (`vars:`, then
${files.manifest}); the folders are params.yaml's `paths:`. Code joins the two: `Path(paths.prepared) /
FILES.manifest`. tests/unit/test_catalog.py keeps every other file from spelling a name out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

__all__ = ["CATALOG_FILE", "all_names", "load_catalog", "FILES"]

CATALOG_FILE = Path(__file__).with_name("artifacts.yaml")
"""The catalog itself; a DVC dep of every stage that imports this module (a renamed file reruns its writers)."""


@dataclass(frozen=True)
class Files:
    """artifacts.yaml's `files:`, one field per entry (see there what each names and where it lies)."""

    manifest: str
    embeddings: str
    null_embedding: str
    metrics: str
    unet: str
    scheduler: str
    codec: str
    model_card: str
    checkpoints: str
    corpus: str
    self_check: str
    corpus_grid: str
    samples_grid: str
    loss: str
    live: str
    shard_prefix: str
    shard_record: str
    decisions: Mapping[str, str]
    """{synthetic set name: its decisions file}."""
    thresholds: str
    classifier: str
    cells: str
    cell_result: str
    predictions: str
    confusion_matrix: str
    results: str
    plots: str
    curves: str
    confusion: str
    replicates: str
    report_html: str
    report_md: str
    budget: str
    stage_times: str
    self_check_times: str
    locks: str
    logs: str


def all_names(files: Files) -> list[str]:
    """Every name the catalog defines, nested entries (decisions) included, in file order."""
    names: list[str] = []
    for field in dataclasses.fields(files):
        value = getattr(files, field.name)
        names.extend(value.values() if isinstance(value, Mapping) else [value])
    return names


def _name(value: Any, key: str, path: Path) -> str:
    if not isinstance(value, str) or not value.strip() or "/" in value or "\\" in value or "$" in value:
        raise ValueError(f"{path}: files.{key} must be a file or folder name (no path), got {value!r}")
    return value


def load_catalog(path: str | Path = CATALOG_FILE) -> Files:
    """The catalog of `path`: every field of Files given, each a plain name, no name given twice."""
    path = Path(path)
    entries = (yaml.safe_load(path.read_text()) or {}).get("files")
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: no `files:` mapping")
    fields = {field.name for field in dataclasses.fields(Files)}
    if set(entries) != fields:
        raise ValueError(f"{path}: files: unknown {sorted(set(entries) - fields)}, missing {sorted(fields - set(entries))}")
    values: dict[str, Any] = {}
    for key, value in entries.items():
        if isinstance(value, dict):
            values[key] = MappingProxyType({str(k): _name(v, f"{key}.{k}", path) for k, v in value.items()})
        else:
            values[key] = _name(value, key, path)
    files = Files(**values)
    names = all_names(files)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{path}: files: {', '.join(twice)} defined more than once")
    return files


FILES = load_catalog()
"""The project's catalog, read once at import."""
