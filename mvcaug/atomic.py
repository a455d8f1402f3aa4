"""Atomic, durable file writes: a temp file in the same folder, fsync, then one rename.

An interrupted stage therefore never leaves a half-written file that a rerun would take as done, and a
file a stage has committed survives a power cut. Files get the mode the umask gives (0644 under the
usual 022), like any file a program creates. A full disk is a DiskFullError naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mvcaug.errors import DiskFullError


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is flushed and replaces `target` in one step."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        # created by this process alone, with the mode the umask allows (mkstemp would force 0600)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
        fsync_path(target.parent)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise DiskFullError(f"{target}: no space left on device; free some space and rerun "
                                "(finished work is kept, nothing half-written remains)") from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | Path, payload: Any) -> None:
    write_text(target, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_parquet(target: str | Path, table: pa.Table) -> None:
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)


def write_png(target: str | Path, image: Image.Image) -> None:
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG")
