"""Tasks that call git and DVC for scheduled regeneration and the whole-pipeline flow.

Only documented interfaces: the `dvc` and `git` command lines (`dvc status --json`, `dvc dag --dot`,
`dvc repro --single-item`, `dvc push`, `dvc metrics diff --md`) and the dvc.lock file format; DVC decides
what is stale (content hashes of every dep), git records the result. Each call is a small Prefect task,
so it shows in the UI with its log.
"""

from __future__ import annotations

import graphlib
import json
import logging
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE

__all__ = ["CommandFailed", "dag_order", "head", "stage_order", "stale_stages", "reproduce", "uncommitted", "push",
    "commit_branch", "metrics_diff"]

log = logging.getLogger("mvcaug.regenerate")

EDGE = re.compile(r'^"(?P<source>[^"]+)"\s*->\s*"(?P<target>[^"]+)"')
NODE = re.compile(r'^"(?P<node>[^"]+)";')


class CommandFailed(RuntimeError):
    """A git or dvc command exited non-zero; the message holds its output."""


def _git_identity_env(root: str) -> dict[str, str]:
    """The environment, plus a fallback author when git has none configured (e.g. on a server)."""
    env = dict(os.environ)
    configured = subprocess.run(["git", "config", "user.email"], cwd=root, capture_output=True, text=True)
    if not configured.stdout.strip():
        for role in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{role}_NAME", "mvcaug regenerate")
            env.setdefault(f"GIT_{role}_EMAIL", "regenerate@mvcaug.invalid")
    return env


def run_command(args: list[str], root: str, env: dict[str, str] | None = None) -> str:
    """Run git or dvc in root; returns stdout, raises CommandFailed with the output on failure."""
    command = [sys.executable, "-m", "dvc", *args[1:]] if args[0] == "dvc" else args
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise CommandFailed(
            f"`{' '.join(args)}` failed (exit {result.returncode}) in {root}:\n"
            f"{(result.stdout + result.stderr).strip()[-4000:]}"
        )
    return result.stdout


def parse_json_output(output: str) -> dict:
    """The JSON object a `dvc ... --json` command printed (DVC may print notices before it)."""
    start = output.find("{")
    return json.loads(output[start:]) if start >= 0 else {}


def dag_order(dot: str) -> list[str]:
    """Stage names in dependency order from `dvc dag --dot` output (ties in the order DVC lists them)."""
    nodes, edges = [], []
    for line in dot.splitlines():
        line = line.strip()
        if edge := EDGE.match(line):
            edges.append((edge["source"], edge["target"]))
        elif node := NODE.match(line):
            nodes.append(node["node"])
    sorter = graphlib.TopologicalSorter({node: set() for node in nodes})
    for source, target in edges:
        sorter.add(target, source)
    sorter.prepare()
    order, rank = [], {node: i for i, node in enumerate(nodes)}
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda node: rank.get(node, len(rank)))
        order.extend(ready)
        sorter.done(*ready)
    return order


def head(root: str) -> str:
    """The commit checked out in root."""
    return run_command(["git", "rev-parse", "HEAD"], root).strip()


def lock_outputs(root: str) -> list[str]:
    """Every output path dvc.lock records (relative to root)."""
    lock = Path(root) / "dvc.lock"
    if not lock.is_file():
        return []
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return sorted({out["path"] for stage in stages.values() for out in stage.get("outs", [])})


def result_files(root: str) -> list[str]:
    """The files a run changes that git (not DVC's cache) keeps, relative to root: dvc.lock and
    params.yaml, every `.dvc` file, the `.gitignore` that hides each cached output from git (DVC writes
    it), and the outputs git does not ignore (those declared `cache: false`: metrics, plots)."""
    files = {"dvc.lock", "params.yaml"}
    files.update(run_command(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.dvc"],
                             root).split())
    for path in lock_outputs(root):
        ignored = subprocess.run(["git", "check-ignore", "-v", "--", path], cwd=root, capture_output=True, text=True)
        if ignored.returncode == 0:  # "<source>:<line>:<pattern>\t<path>"
            files.add(ignored.stdout.split(":", 1)[0])
        else:
            files.add(path)
    return sorted(files)


def pending_results(root: str) -> list[str]:
    """Result files that differ from HEAD (modified, new or deleted): a run that was not committed."""
    out = run_command(["git", "status", "--porcelain=v1", "-z", "-uall", "--", *result_files(root)], root)
    return sorted(entry[3:] for entry in out.split("\0") if len(entry) > 3)


@task(cache_policy=NO_CACHE)
def stage_order(root: str) -> list[str]:
    """Stage names in dependency order, as `dvc dag` reports the graph."""
    return dag_order(run_command(["dvc", "dag", "--dot"], root))


@task(cache_policy=NO_CACHE)
def stale_stages(root: str, targets: tuple[str, ...] = ()) -> list[str]:
    """Stages (and `.dvc` data sources) that `dvc status` finds stale by content hash; empty when up to date."""
    status = parse_json_output(run_command(["dvc", "status", "--json", *targets], root))
    for name, changes in status.items():
        log.info("stale: %s %s", name, json.dumps(changes))
    return sorted(status)


@task(cache_policy=NO_CACHE, task_run_name="{stage}")
def reproduce(stage: str, root: str, force: bool = False) -> bool:
    """Reproduce one stage if `dvc status` finds it stale (or when forced); True when it ran."""
    if not force and not stale_stages.fn(root, (stage,)):
        log.info("%s: up to date, skipped", stage)
        return False
    command = [sys.executable, "-m", "dvc", "repro", "--single-item", stage] + (["--force"] if force else [])
    result = subprocess.run(command, cwd=root, capture_output=True, text=True)
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip():
            log.info("%s | %s", stage, line)
    if result.returncode != 0:
        raise CommandFailed(f"stage '{stage}' failed (exit {result.returncode}); see its log above")
    return True


@task(cache_policy=NO_CACHE)
def uncommitted(root: str) -> list[str]:
    """Result files that differ from HEAD: a previous run that stopped before its commit."""
    pending = pending_results(root)
    if pending:
        log.info("results not committed yet: %s", ", ".join(pending))
    return pending


@task(cache_policy=NO_CACHE)
def push(root: str) -> str:
    """`dvc push` every tracked output to the default remote; returns DVC's summary."""
    out = run_command(["dvc", "push"], root).strip()
    summary = out.splitlines()[-1] if out else "nothing to push"
    log.info("dvc push: %s", summary)
    return summary


@task(cache_policy=NO_CACHE)
def commit_branch(root: str, branch_prefix: str, message: str) -> str | None:
    """Commit the changed result files on a new branch <prefix>/<UTC date-time> from HEAD.

    The workspace stays on the new branch, so its files keep matching dvc.lock and the next run
    starts from this commit. Returns the branch, or None when no result file changed.
    """
    files = pending_results(root)
    if not files:
        log.info("no result file changed; nothing to commit")
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    branch, n = f"{branch_prefix}/{stamp}", 1
    while run_command(["git", "branch", "--list", branch], root).strip():
        n += 1
        branch = f"{branch_prefix}/{stamp}-{n}"
    run_command(["git", "checkout", "-q", "-b", branch], root)
    run_command(["git", "add", "-A", "--", *files], root)
    run_command(["git", "commit", "-q", "-m", message, "--only", "--", *files], root, env=_git_identity_env(root))
    log.info("committed %s on branch %s", ", ".join(files), branch)
    return branch


@task(cache_policy=NO_CACHE)
def metrics_diff(root: str, previous: str) -> str:
    """`dvc metrics diff <previous> --md`: the metrics of that commit against the workspace."""
    return run_command(["dvc", "metrics", "diff", previous, "--md"], root).strip()
