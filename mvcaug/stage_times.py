"""Wall time of each stage's last finished run, kept beside the project (not a DVC output).

The report's "where the time went" table reads it. It is no DVC dependency: the time a stage took never
decides whether anything reruns, and a DVC output holding it would never be byte-identical.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from mvcaug.atomic import write_json
from mvcaug.locks import exclusive_lock


def read_stage_times(path: str | Path) -> dict[str, dict]:
    """{stage: {"seconds": float, "finished": ISO time}}; empty when nothing was recorded."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def record_stage_time(path: str | Path, stage: str, seconds: float) -> None:
    """Set one stage's entry; other stages' entries stay (read-modify-write under a lock)."""
    path = Path(path)
    with exclusive_lock(path.with_name(path.name + ".lock")):
        times = read_stage_times(path)
        times[stage] = {"seconds": round(seconds, 2), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json(path, times)
