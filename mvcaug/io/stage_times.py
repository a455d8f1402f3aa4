"""Wall time of each stage's last finished run, and its throughput, kept beside the project (not a DVC output).

The report's "where the time went" table reads it. A stage's entry is {"seconds", "finished", "throughput"}:
flows.cli empties the throughput when the stage starts (start_stage_record), the stage's tasks add theirs as
they finish work (add_throughput: a Dask worker too, as it writes in the same project folder), and the
stage's wall time is set when it ends (record_stage_time), so the figures always come from one run.
It is no DVC dependency: the time a stage took never decides whether anything reruns, and a DVC output
holding it would never be byte-identical.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from mvcaug.core.throughput import Throughput, stage_throughput  # re-exported: the stage-times file's reader
from mvcaug.io.atomic import write_json
from mvcaug.io.catalog import FILES
from mvcaug.io.locks import exclusive_lock

__all__ = ["STAGE_VARIABLE", "running_stage", "process_seconds", "read_stage_times", "record_stage_time",
           "start_stage_record", "add_throughput", "stage_throughput", "note_throughput"]

STAGE_VARIABLE = "MVCAUG_STAGE"
"""Set by flows.cli to the stage it runs, so a task records its throughput under the stage that ran it (the
replicates stage runs the train and generate tasks too); Dask workers started by the stage inherit it."""


def running_stage(default: str) -> str:
    """The stage this process (or the stage that started it) runs; `default` when none set it."""
    return os.environ.get(STAGE_VARIABLE) or default


def process_seconds() -> float | None:
    """Wall seconds since this process started (Linux /proc), so a stage's time includes its imports and
    its Prefect server's start, as a person at the terminal waits for them; None elsewhere."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def read_stage_times(path: str | Path) -> dict[str, dict]:
    """{stage: {"seconds": float, "finished": ISO time}} in the order the stages finished; empty when
    nothing was recorded."""
    try:
        times = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return dict(sorted(times.items(), key=lambda item: item[1].get("finished", "")))


def changed_entry(path: str | Path, stage: str, change: Callable[[dict], None]) -> None:
    """Apply change to one stage's entry; other stages' entries stay (read-modify-write under a lock, as
    several processes write: a stage, its Dask workers, another stage)."""
    path = Path(path)
    with exclusive_lock(path.with_name(path.name + ".lock"), wait=True):
        times = read_stage_times(path)
        change(times.setdefault(stage, {}))
        write_json(path, times)


def record_stage_time(path: str | Path, stage: str, seconds: float) -> None:
    """Set one stage's wall time and finishing time; its throughput (this run's) stays."""
    changed_entry(path, stage, lambda entry: entry.update(
        seconds=round(seconds, 2), finished=datetime.now(timezone.utc).isoformat(timespec="seconds")))


def start_stage_record(path: str | Path, stage: str) -> None:
    """Empty the stage's throughput as it starts: what its tasks add next is this run's alone."""
    changed_entry(path, stage, lambda entry: entry.update(throughput=[]))


def add_throughput(path: str | Path, stage: str, measure: Throughput) -> None:
    """Add one task's measure to the stage's entry (measures of the same work and device are summed when read)."""
    if measure.count <= 0:
        return
    changed_entry(path, stage, lambda entry: entry.setdefault("throughput", []).append(measure.to_json()))


def note_throughput(run_dir: str | Path, default_stage: str, measure: Throughput) -> None:
    """add_throughput into <paths.run>'s stage-times file, under the running stage (default_stage when run
    outside a stage process)."""
    add_throughput(Path(run_dir) / FILES.stage_times, running_stage(default_stage), measure)
