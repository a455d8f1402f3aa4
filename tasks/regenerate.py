"""Tasks of scheduled regeneration: a run lock, git and DVC calls, and dataset ingestion.

Nothing here knows the pipeline's stages: DVC decides what is stale (content hashes of every dep,
the dataset folder included), git records the result, and each call is a small Prefect task so it
shows in the UI with its log.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.atomic import atomic_path
from mvcaug.digests import file_sha256

log = logging.getLogger("mvcaug.regenerate")
ingest_log = logging.getLogger("mvcaug.ingest")

LOCK_FILE = ".dvc/tmp/regenerate.lock"  # .dvc/tmp is git-ignored by DVC itself
DATA_EVENT = "mvcaug.data.arrived"


class CommandFailed(RuntimeError):
    """A git or dvc command exited non-zero; the message holds its output."""


# --- the run lock ------------------------------------------------------------------------------


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[bool]:
    """Hold a non-blocking exclusive flock on `path`; yields False when another process holds it.

    The kernel releases the lock when the holder's process ends, however it ends, so a run that
    died never blocks the next one. The descriptor is close-on-exec: child processes never hold it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_holder(path: str | Path) -> str:
    """The pid written by the process holding the lock, or '?'."""
    try:
        return Path(path).read_text().strip() or "?"
    except OSError:
        return "?"


# --- git and dvc ---------------------------------------------------------------------------------


def _git_identity_env(root: str) -> dict[str, str]:
    """The environment, plus a fallback author when git has none configured (e.g. on a server)."""
    env = dict(os.environ)
    configured = subprocess.run(["git", "config", "user.email"], cwd=root, capture_output=True, text=True)
    if not configured.stdout.strip():
        for role in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{role}_NAME", "mvcaug regenerate")
            env.setdefault(f"GIT_{role}_EMAIL", "regenerate@mvcaug.invalid")
    return env


def _run(args: list[str], root: str, env: dict[str, str] | None = None) -> str:
    """Run git or dvc in root; returns stdout, raises CommandFailed with the output on failure."""
    command = [sys.executable, "-m", "dvc", *args[1:]] if args[0] == "dvc" else args
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise CommandFailed(
            f"`{' '.join(args)}` failed (exit {result.returncode}) in {root}:\n"
            f"{(result.stdout + result.stderr).strip()[-4000:]}"
        )
    return result.stdout


def head(root: str) -> str:
    """The commit checked out in root."""
    return _run(["git", "rev-parse", "HEAD"], root).strip()


def current_branch(root: str) -> str:
    """The branch checked out in root ('HEAD' when detached)."""
    return _run(["git", "rev-parse", "--abbrev-ref", "HEAD"], root).strip()


def result_files(root: str) -> list[str]:
    """The files a run changes that git (not DVC's cache) keeps, relative to root.

    dvc.lock and params.yaml, every `.dvc` file, the `.gitignore` DVC writes beside each cached
    output, and the outputs declared `cache: false` (metrics.json, finetune metrics and loss).
    """
    from dvc.repo import Repo

    files = {"dvc.lock", "params.yaml"}
    with Repo(root) as repo:
        top = Path(repo.root_dir)
        for stage in repo.index.stages:
            if stage.relpath.endswith(".dvc"):
                files.add(Path(stage.relpath).as_posix())
            for out in stage.outs:
                path = Path(os.path.relpath(out.fs_path, top))
                files.add((path.parent / ".gitignore").as_posix() if out.use_cache else path.as_posix())
    return sorted(files)


def pending_results(root: str) -> list[str]:
    """Result files that differ from HEAD (modified, new or deleted): a run that was not committed."""
    out = _run(["git", "status", "--porcelain=v1", "-z", "-uall", "--", *result_files(root)], root)
    return sorted(entry[3:] for entry in out.split("\0") if len(entry) > 3)


@task(cache_policy=NO_CACHE)
def changed(root: str) -> list[str]:
    """Stages (and `.dvc` data sources) that DVC finds stale by content hash; empty when up to date."""
    out = _run(["dvc", "status", "--json"], root)
    status = json.loads(out.strip().splitlines()[-1] if out.strip() else "{}")
    for name, changes in status.items():
        log.info("stale: %s %s", name, json.dumps(changes))
    return sorted(status)


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
    out = _run(["dvc", "push"], root).strip()
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
    while _run(["git", "branch", "--list", branch], root).strip():
        n += 1
        branch = f"{branch_prefix}/{stamp}-{n}"
    _run(["git", "checkout", "-q", "-b", branch], root)
    _run(["git", "add", "-A", "--", *files], root)
    _run(["git", "commit", "-q", "-m", message, "--only", "--", *files], root, env=_git_identity_env(root))
    log.info("committed %s on branch %s", ", ".join(files), branch)
    return branch


@task(cache_policy=NO_CACHE)
def metrics_diff(root: str, previous: str) -> str:
    """`dvc metrics diff <previous> --md`: the metrics of that commit against the workspace."""
    return _run(["dvc", "metrics", "diff", previous, "--md"], root).strip()


# --- ingestion -----------------------------------------------------------------------------------


@task(cache_policy=NO_CACHE)
def ingest_images(source: str, dataset: str) -> dict[str, int]:
    """Copy images from source/<class>/ into dataset/<class>/ unless their content is already there.

    Duplicates are found by sha256 over the whole dataset folder; a name already taken by other
    content gets the hash appended. Each copy is a temp file beside its target, then a rename, so an
    interrupted ingest never leaves a partial image. Unreadable images are skipped with a warning.
    Returns the number of new files per class.
    """
    from mvcaug.prepare import IMAGE_SUFFIXES, DatasetError, open_image

    src, dst = Path(source), Path(dataset)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder; pass a folder of class subfolders")

    def images(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                      and not p.name.startswith("."))

    known = {file_sha256(p) for d in (dst.iterdir() if dst.is_dir() else []) if d.is_dir() for p in images(d)}
    added: dict[str, int] = {}
    for stray in images(src):
        ingest_log.warning("%s: not in a class subfolder, skipped", stray)
    for class_dir in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in images(class_dir):
            digest = file_sha256(file)
            if digest in known:
                ingest_log.info("%s: already in the dataset (same content), skipped", file)
                continue
            try:
                open_image(file)
            except DatasetError as err:
                ingest_log.warning("skipped: %s", err)
                continue
            target = dst / class_dir.name / file.name
            if target.exists():
                target = target.with_name(f"{file.stem}-{digest[:12]}{file.suffix}")
            with atomic_path(target) as tmp:
                shutil.copyfile(file, tmp)
            known.add(digest)
            added[class_dir.name] = added.get(class_dir.name, 0) + 1
    ingest_log.info("ingested %d new images into %s: %s", sum(added.values()), dst, added or "none")
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
    ingest_log.info("emitted %s for mvcaug.dataset.%s (%d new files)%s", DATA_EVENT, name, sum(added.values()),
             "" if event else " (no Prefect API to receive it)")
