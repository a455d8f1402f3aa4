"""Wall time of the embedded default's `dvc repro`, stage by stage, from scratch; then a no-op rerun.

    .venv/bin/python benchmarks/repro_timing.py [--rev REV] [--keep DIR] [--noop-runs 3]

It copies the project (the working tree, or git revision REV, to time an older version the same way)
into a throw-away git + DVC workspace with the params as committed, runs each stage with
`dvc repro --single-item` in dependency order (`dvc dag`), timing each as a whole process, then times
a no-op `dvc repro`. A revision that has flows/api_server.py runs as `make run` does, with one Prefect
server for all stages; an older one runs as `make run` did then, a temporary server per stage. The
checkout's own data/ is untouched. Targets (issue 12): the whole run at most 300 s, no-op at most 1 s.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import nullcontext
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.workspace import make_workspace, run, update_params  # noqa: E402

log = logging.getLogger("benchmarks.repro_timing")
TARGETS = {"run_s": 300.0, "noop_s": 1.0}


def workspace_at(rev: str | None, folder: Path) -> Path:
    """The working tree (rev None) or a git revision, as a fresh git + DVC workspace in folder."""
    if rev is None:
        return make_workspace(folder, params={})
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    update_params(folder, {})
    for args in (["git", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "workspace"]):
        run(args, folder)
    return folder


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    run(args, cwd)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", help="a git revision to time instead of the working tree")
    parser.add_argument("--keep", help="workspace folder to keep (default: a temporary one)")
    parser.add_argument("--noop-runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mvcaug-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    workspace = workspace_at(args.rev, folder)
    shared = (workspace / "flows" / "api_server.py").is_file()
    if shared:
        from flows.api_server import prefect_api
    server = prefect_api() if shared else nullcontext()
    with server:
        dag = subprocess.run([sys.executable, "-m", "dvc", "dag", "--dot"], cwd=workspace, capture_output=True,
                             text=True, check=True).stdout
        from tasks.vcs import dag_order

        seconds = {stage: timed(["dvc", "repro", "--single-item", stage], workspace) for stage in dag_order(dag)}
        noops = sorted(timed(["dvc", "repro"], workspace) for _ in range(args.noop_runs))
    total = sum(seconds.values())
    log.info("%s, %s", args.rev or "working tree", "one Prefect server for all stages" if shared else
             "a temporary Prefect server per stage")
    log.info("| stage | wall time (s) |")
    log.info("| --- | --- |")
    for stage, value in seconds.items():
        log.info("| %s | %.1f |", stage, value)
    log.info("| all stages | %.1f |", total)
    log.info("run_s   %8.1f   target %6.1f   ratio %.2f", total, TARGETS["run_s"], total / TARGETS["run_s"])
    noop = noops[len(noops) // 2]
    log.info("noop_s  %8.2f   target %6.1f   ratio %.2f   (median of %d)", noop, TARGETS["noop_s"],
             noop / TARGETS["noop_s"], len(noops))
    log.info("workspace: %s", workspace)


if __name__ == "__main__":
    main()
