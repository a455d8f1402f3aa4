"""A new user's first run, timed: `git clone` of this repository, then `make run`, against issue 22's targets.

    .venv/bin/python benchmarks/first_run.py [--rev REV] [--keep DIR] [--cold-pip-cache]

It clones the repository (at REV, default HEAD; commit first: the clone holds what is committed), then runs
`make setup` (the venv and `pip install -e .`, by uv where it can be had: tools/install_env.py) and `make run`
(the Prefect server, then `dvc repro` of every stage) as two whole processes, and reads the stages' own wall
times from the clone's stage-times file in <paths.run> (what the report's "where the time went" shows,
throughput included). What `make run` took beyond its stages is DVC between them and the server's start.
--cold-pip-cache gives pip and uv empty caches, as on a fresh machine. The machine's speed
(benchmarks/machine_speed.py) is measured before and after, since it drifts. Targets (issue 22): set-up at most
60 s; the stages other than the one-time pretrain, plus DVC between them, at most 300 s.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine_speed import steps_per_second  # noqa: E402
from mvcaug.core.throughput import describe  # noqa: E402
from mvcaug.io.catalog import FILES  # noqa: E402
from mvcaug.io.params_file import load_params  # noqa: E402
from mvcaug.io.stage_times import read_stage_times, stage_throughput  # noqa: E402

log = logging.getLogger("benchmarks.first_run")
TARGETS = {"setup_s": 60.0, "stages_without_pretrain_s": 300.0}
ONE_TIME = "pretrain"


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD", help="the git revision to clone (default HEAD)")
    parser.add_argument("--keep", help="folder for the clone (default: a temporary one, kept for a look)")
    parser.add_argument("--cold-pip-cache", action="store_true",
                        help="empty pip and uv caches, as on a fresh machine")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mvcaug-first-run-")) / "clone"
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PREFECT_API_URL")}
    if args.cold_pip_cache:
        env["PIP_CACHE_DIR"] = tempfile.mkdtemp(prefix="mvcaug-pip-cache-")
        env["UV_CACHE_DIR"] = tempfile.mkdtemp(prefix="mvcaug-uv-cache-")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(folder)], check=True)
    subprocess.run(["git", "checkout", "-q", args.rev], cwd=folder, check=True)
    speed_before = steps_per_second(30)  # the machine's speed drifts: say how fast it was (machine_speed.py)
    setup = timed(["make", "setup"], folder, env)
    run = timed(["make", "run"], folder, env)
    speed_after = steps_per_second(30)
    run_dir = folder / load_params(folder / "params.yaml").paths.run
    entries = read_stage_times(run_dir / FILES.stage_times)  # in the order the stages finished
    stages = {stage: entry["seconds"] for stage, entry in entries.items() if "seconds" in entry}
    without = sum(seconds for stage, seconds in stages.items() if stage != ONE_TIME)
    between = run - sum(stages.values())
    log.info("%s (%s), %s pip cache", args.rev, folder, "an empty" if args.cold_pip_cache else "the user's")
    log.info("| stage | wall time (s) | throughput (per device) |")
    log.info("| --- | --- | --- |")
    for stage, seconds in stages.items():
        log.info("| %s | %.1f | %s |", stage, seconds, describe(stage_throughput(entries[stage])))
    log.info("| DVC between stages, server start | %.1f | |", between)
    log.info("setup_s                    %8.1f   target %6.1f   ratio %.2f", setup, TARGETS["setup_s"],
             setup / TARGETS["setup_s"])
    budget = without + between
    log.info("stages_without_pretrain_s  %8.1f   target %6.1f   ratio %.2f   (%.1f in stages + %.1f DVC and server)",
             budget, TARGETS["stages_without_pretrain_s"], budget / TARGETS["stages_without_pretrain_s"], without,
             between)
    log.info("pretrain_s                 %8.1f   (one time: no later stage's change reruns it)", stages.get(ONE_TIME, 0.0))
    log.info("make run                   %8.1f   in all, set-up included: %.1f", run, setup + run)
    log.info("machine speed              %8.2f   pretrain steps/s before, %.2f after (benchmarks/machine_speed.py)",
             speed_before, speed_after)


if __name__ == "__main__":
    main()
