"""Reading back what a stage stored for reuse (shard records, cell results): a missing or unreadable
record means "not done", never an error, so an interrupted write only costs a recomputation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_json"]


def read_json(path: str | Path) -> Any | None:
    """The JSON value in path, or None when the file is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
