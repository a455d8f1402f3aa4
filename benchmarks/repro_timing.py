"""Wall time of `dvc repro` on the embedded default: from scratch, then a no-op rerun.

Targets (issue 2): from scratch under 10 minutes on 2 CPU cores, no-op under 2 seconds.
Run: .venv/bin/python benchmarks/repro_timing.py [--keep DIR]
It copies the project into a temporary git + DVC workspace (the params as committed), so the
checkout's own data/ is untouched, and prints one line per figure.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.workspace import make_workspace, run, stages_ran  # noqa: E402

log = logging.getLogger("benchmarks.repro_timing")
TARGETS = {"from_scratch_s": 600.0, "noop_s": 2.0}


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = run(args, cwd)
    return time.perf_counter() - start, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", help="workspace folder to keep (default: a temporary one)")
    parser.add_argument("--noop-runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mvcaug-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    workspace = make_workspace(folder, params={})
    scratch, output = timed(["dvc", "repro"], workspace)
    noops = [timed(["dvc", "repro"], workspace)[0] for _ in range(args.noop_runs)]
    figures = {"from_scratch_s": scratch, "noop_s": sorted(noops)[len(noops) // 2]}
    log.info("stages run: %s", sorted(stages_ran(output)))
    for name, value in figures.items():
        log.info("%-15s %8.2f   target %6.1f   ratio %.2f", name, value, TARGETS[name], value / TARGETS[name])
    log.info("metrics: %s", (workspace / "metrics.json").read_text())


if __name__ == "__main__":
    main()
