"""Wall time of each stage's last finished run, kept beside the project (not a DVC output).

The report's "where the time went" table reads it. It is no DVC dependency: the time a stage took never
decides whether anything reruns, and a DVC output holding it would never be byte-identical.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from mvcaug.io.atomic import write_json
from mvcaug.io.locks import exclusive_lock

__all__ = ["process_seconds", "read_stage_times", "record_stage_time"]


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


def record_stage_time(path: str | Path, stage: str, seconds: float) -> None:
    """Set one stage's entry; other stages' entries stay (read-modify-write under a lock)."""
    path = Path(path)
    with exclusive_lock(path.with_name(path.name + ".lock")):
        times = read_stage_times(path)
        times[stage] = {"seconds": round(seconds, 2), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json(path, times)
