"""Repeated generators (generate.replicates): what a synthetic set's gain would be with another draw of
fine-tuning, mixing and generation, not only with other classifier seeds.

The main run draws the generator once (seed 0 of mix, finetune and generate), so its intervals are conditional
on that one generator. Generator k >= 1 repeats the same stages with every one of those seeds + k, into its own
folder (paths.replicates/r<k>/), and trains the cells that use the MVC set with the same classifier seeds: the
report then nests the seeds inside the generators (mvcaug.judging.stats.nested_gain, mvcaug.judging.bootstrap's generator
level). Controls (real only, more_real and corpus cells) do not depend on the generator and are not repeated.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mvcaug.judging.cells import Cell
from mvcaug.core.params import Params
from mvcaug.data.synthetic_sets import MVC

__all__ = ["REPEATED_PATHS", "PARAMS_FILE", "replicate_folder", "replicate_params", "repeated_cells",
    "params_document"]

REPEATED_PATHS = ("mixed", "unmixed", "model", "synthetic", "synthetic_unmixed", "synthetic_pretrained",
                  "filter", "train")
"""The paths a generator writes: each moves into its replicate's folder, named after the field (so the names
cannot clash whatever the main run's paths are)."""
PARAMS_FILE = "params.yaml"
"""In each replicate's folder: the params its stages ran with."""


def replicate_folder(params: Params, generator: int) -> Path:
    return Path(params.paths.replicates) / f"r{generator}"


def replicate_params(params: Params, generator: int) -> Params:
    """The params of generator `generator` (>= 1): its own folder for every path it writes, the mix, finetune
    and generate seeds shifted by `generator`, and the MVC set alone (the unmixed and the pretrained model's
    sets are yardsticks of the main run, not what the verdict nests)."""
    if generator < 1:
        raise ValueError(f"generator {generator}: the main run is generator 0; replicates are 1 and up")
    folder = replicate_folder(params, generator)
    moved = {name: str(folder / f"{name}{Path(getattr(params.paths, name)).suffix}") for name in REPEATED_PATHS}
    g = params.generate
    return dataclasses.replace(
        params, paths=dataclasses.replace(params.paths, **moved),
        mix=dataclasses.replace(params.mix, seed=params.mix.seed + generator),
        finetune=dataclasses.replace(params.finetune, seed=params.finetune.seed + generator),
        generate=dataclasses.replace(g, seed=g.seed + generator, ablation=False, compare_pretrained=False, replicates=1),
    )


def repeated_cells(cells: list[Cell]) -> list[Cell]:
    """The cells a generator changes: those that train on the MVC set (grid strategies and the budget curve)."""
    return [cell for cell in cells if cell.uses_synthetic and cell.synthetic_set == MVC]


def params_document(params: Params) -> dict[str, Any]:
    """params as plain YAML data (tuples as lists), which load_params reads back to the same Params."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value

    return plain(dataclasses.asdict(params))
