"""Advisory file locks (flock) that say who holds them.

A stage takes one before it writes its outputs, so a second writer on the same folder (a rerun started
while an orphaned stage still runs, two regenerations at once) is turned away instead of interleaving
files. The kernel drops the lock when its holder's process ends, however it ends, so a killed run never
blocks the next; the descriptor is close-on-exec, so child processes never hold it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["exclusive_lock", "lock_holder"]


@contextlib.contextmanager
def exclusive_lock(path: str | Path, wait: bool = False) -> Iterator[bool]:
    """Hold an exclusive flock on `path`; yields False when another process holds it, or with wait, waits
    for it (for a short read-modify-write that every writer must get its turn at)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
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
