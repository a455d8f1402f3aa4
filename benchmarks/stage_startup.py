"""What each stage process spends before its first line of work: its imports, then Prefect's start of a flow run.

    .venv/bin/python benchmarks/stage_startup.py [--runs 5]

For every stage in dvc.yaml: the median whole-process time of `python -c "import flows.<stage>"` (the
interpreter and every module the stage imports), minus nothing. Then, once, Prefect's own start-up against a
running server (as `make run` gives every stage one): the median whole-process time of a process that runs a
no-op flow, minus that of one that only imports prefect. A stage's start-up is the sum. Target (issue 22): at
most 3 s per stage. Run it with nothing else running: two processes on two cores slow each other.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.prefect_server import prefect_server  # noqa: E402

log = logging.getLogger("benchmarks.stage_startup")
TARGET_S = 3.0
NO_OP_FLOW = "from prefect import flow\n@flow\ndef noop():\n    return 1\nnoop()\n"


def median_seconds(code: str, runs: int, env: dict[str, str]) -> float:
    """Median whole-process wall time of `python -c code` in the project root."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    imports = {stage: median_seconds(f"import flows.{stage}", args.runs, env) for stage in stages}
    with tempfile.TemporaryDirectory() as home, prefect_server(Path(home)) as api:
        served = {**env, "PREFECT_API_URL": api, "PREFECT_HOME": home}
        prefect_start = (median_seconds(NO_OP_FLOW, args.runs, served)
                         - median_seconds("import prefect", args.runs, served))
    log.info("Prefect's start of a flow run (a no-op flow, server running): %.2f s (median of %d)", prefect_start,
             args.runs)
    log.info("| stage | imports (s) | + Prefect start (s) | target (s) | ratio |")
    log.info("| --- | --- | --- | --- | --- |")
    for stage, seconds in imports.items():
        total = seconds + prefect_start
        log.info("| %s | %.2f | %.2f | %.1f | %.2f |", stage, seconds, total, TARGET_S, total / TARGET_S)
    worst = max(imports, key=lambda s: imports[s])
    log.info("worst: %s, %.2f s", worst, imports[worst] + prefect_start)


if __name__ == "__main__":
    main()
