"""The synthetic sets a run generates, by name, and where each one's files are.

`mvc` is the set generated from the MVC mixes; `no_mvc` the same shards generated from the P = Q = 0
mixes (the MVC ablation, when generate.ablation is on). Every stage that handles synthetic images
(generate, quality, train, report) finds a set's folder and mixes through here, so adding a set is one
entry, not an edit in each stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from mvcaug.errors import MissingInputError
from mvcaug.params import GenerateParams, PathsParams

MVC, NO_MVC = "mvc", "no_mvc"
MANIFEST = "manifest.parquet"


@dataclass(frozen=True)
class SyntheticSet:
    """One synthetic set: its name, the folder its shards and manifest go to, and the mixes it is made from."""

    name: str
    folder: str
    mixed: str

    @classmethod
    def named(cls, name: str, paths: PathsParams) -> SyntheticSet:
        if name == MVC:
            return cls(MVC, paths.synthetic, paths.mixed)
        if name == NO_MVC:
            return cls(NO_MVC, paths.synthetic_ablation, paths.mixed_ablation)
        raise ValueError(f"unknown synthetic set {name!r}: {MVC} or {NO_MVC}")


def synthetic_sets(paths: PathsParams, generate: GenerateParams) -> list[SyntheticSet]:
    """The sets this configuration generates: MVC's, and the ablation's when generate.ablation is on."""
    return [SyntheticSet.named(MVC, paths)] + ([SyntheticSet.named(NO_MVC, paths)] if generate.ablation else [])


def manifest_rows(synthetic: SyntheticSet) -> list[dict]:
    """The rows of a set's manifest.parquet (path, label, shard, index, seed, mixed_id, cond_id)."""
    path = Path(synthetic.folder) / MANIFEST
    if not path.is_file():
        raise MissingInputError(f"{path}: no synthetic manifest; run the generate stage first (dvc repro generate)")
    return pq.read_table(path).to_pylist()


def decisions_file(synthetic: SyntheticSet, paths: PathsParams) -> Path:
    """The filter stage's decisions for a set: its manifest rows plus kept, reason and the scores."""
    return Path(paths.filter) / f"{synthetic.name}.parquet"


def decision_rows(synthetic: SyntheticSet, paths: PathsParams) -> list[dict]:
    """Every image of a set with the filter's decision, in manifest order."""
    path = decisions_file(synthetic, paths)
    if not path.is_file():
        raise MissingInputError(f"{path}: no filter decisions; run the filter stage first (dvc repro filter)")
    return pq.read_table(path).to_pylist()


def kept_rows(synthetic: SyntheticSet, paths: PathsParams) -> list[dict]:
    """The images of a set that the filter kept (all of them with filter.enabled false), in manifest order."""
    return [row for row in decision_rows(synthetic, paths) if row["kept"]]
