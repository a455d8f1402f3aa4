"""Tasks of the whole-pipeline flow: read the stage graph from dvc.yaml and reproduce stage by stage.

Each stage runs through `dvc repro --single-item`, so DVC decides what is stale, runs the stage's own
flow and updates dvc.lock: the workspace ends exactly as after `dvc repro`, and the DAG lives only
in dvc.yaml.
"""

import logging
import subprocess
import sys

import networkx as nx
from prefect import task
from prefect.cache_policies import NO_CACHE

log = logging.getLogger("mvcaug.pipeline")


class StageFailed(RuntimeError):
    """`dvc repro` of one stage exited non-zero."""


@task(cache_policy=NO_CACHE)
def stage_order(root: str) -> list[str]:
    """Stage names in dependency order, as DVC itself sees them (foreach/matrix stages expanded)."""
    from dvc.repo import Repo

    with Repo(root) as repo:
        graph = repo.index.graph
        return [stage.addressing for stage in reversed(list(nx.topological_sort(graph)))]


@task(cache_policy=NO_CACHE, task_run_name="{stage}")
def reproduce(stage: str, root: str, force: bool = False) -> bool:
    """Reproduce one stage if its inputs changed; True when it ran, False when DVC skipped it."""
    command = [sys.executable, "-m", "dvc", "repro", "--single-item", stage] + (["--force"] if force else [])
    result = subprocess.run(command, cwd=root, capture_output=True, text=True)
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip():
            log.info("%s | %s", stage, line)
    if result.returncode != 0:
        raise StageFailed(f"stage '{stage}' failed (exit {result.returncode}); see its log above")
    return f"Running stage '{stage}'" in result.stdout
