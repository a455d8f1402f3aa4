"""Tasks of the replicates stage: each extra generator's params file, the stale folders, the summary."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.atomic import write_json, write_text
from mvcaug.core.params import Params
from mvcaug.method.replicates import PARAMS_FILE, params_document, replicate_folder, replicate_params
from mvcaug.io.catalog import FILES

__all__ = ["clear_replicates", "write_replicate_params", "write_summary"]

log = logging.getLogger("mvcaug.method.replicates")


@task(cache_policy=NO_CACHE)
def clear_replicates(params: Params) -> list[str]:
    """Remove the folders of generators this run does not have (generate.replicates lowered, or 1): no stage
    may find another run's cells there. Returns the removed names."""
    root = Path(params.paths.replicates)
    wanted = {replicate_folder(params, k).name for k in range(1, params.generate.replicates)}
    removed = sorted(p.name for p in root.glob("r*") if p.is_dir() and p.name not in wanted) if root.is_dir() else []
    for name in removed:
        shutil.rmtree(root / name)
    return removed


@task(cache_policy=NO_CACHE, task_run_name="params-r{generator}")
def write_replicate_params(params: Params, generator: int) -> str:
    """<paths.replicates>/r<k>/params.yaml: the params generator k's stages run with (replicate_params)."""
    path = replicate_folder(params, generator) / PARAMS_FILE
    document = params_document(replicate_params(params, generator))
    write_text(path, "# written by the replicates stage (mvcaug.method.replicates.replicate_params); do not edit\n"
               + yaml.safe_dump(document, sort_keys=False))
    return str(path)


@task(cache_policy=NO_CACHE)
def write_summary(params: Params, trained: dict[int, dict]) -> dict:
    """replicates.json: the number of generators and each one's seeds (generator 0 is the main run's)."""
    summary = {"generators": params.generate.replicates, "seeds": [
        {"generator": k, "mix": params.mix.seed + k, "finetune": params.finetune.seed + k,
         "generate": params.generate.seed + k} for k in range(params.generate.replicates)],
        "cells": {str(k): value for k, value in trained.items()}}
    write_json(Path(params.paths.replicates) / FILES.replicates, summary)
    log.info("replicates: %d generator(s)", params.generate.replicates)
    return summary
