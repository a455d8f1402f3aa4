"""Atomic, durable file writes: a temp file in the same folder, fsync, then one rename.

An interrupted stage therefore never leaves a half-written file that a rerun would take as done, and a
file a stage has committed survives a power cut. Files get the mode the umask gives (0644 under the
usual 022), like any file a program creates. A full disk is a DiskFullError naming the file, a read-only
folder an OutputNotWritableError naming the folder; a temporary name never makes a valid name too long.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mvcaug.core.errors import DiskFullError, OutputNotWritableError

__all__ = ["fsync_path", "NAME_MAX", "name_beside", "atomic_path", "write_bytes", "write_text", "write_json",
    "write_parquet", "write_png", "replacing_folder"]


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


NAME_MAX = 255
"""Bytes in one file name on the usual file systems (ext4, XFS, APFS, NTFS in UTF-16 units)."""
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
"""What the OS answers when a folder may not be written to (permissions, a read-only mount)."""


def name_beside(target: Path, prefix: str, suffix: str) -> Path:
    """`prefix + target.name + suffix` in target's folder: a temporary or hidden name for target.

    A valid name near NAME_MAX would be too long with the ~22 bytes added (ENAMETOOLONG on a long file or
    class name); the name part is then cut and a hash of the whole name keeps it unique and the same for
    the same target (so the hidden name of an interrupted swap is found again)."""
    name, room = target.name, NAME_MAX - len(prefix.encode()) - len(suffix.encode())
    if len(name.encode()) > room:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = name.encode()[: room - len(digest) - 1].decode(errors="ignore") + "~" + digest
    return target.with_name(f"{prefix}{name}{suffix}")


@contextlib.contextmanager
def refused_as_unwritable(folder: Path) -> Iterator[None]:
    """An OS refusal to write in `folder` (read-only: permissions, a read-only mount) becomes the one-line
    OutputNotWritableError naming it and the fix; any other OSError passes unchanged."""
    try:
        yield
    except OSError as err:
        if err.errno not in UNWRITABLE:
            raise
        raise OutputNotWritableError(
            f"{folder}: cannot write here ({os.strerror(err.errno).lower()}); make the folder writable "
            "(chmod -R u+w, or remount read-write) or point the output elsewhere (params.yaml, paths:)") from err


def _make_folder(folder: Path) -> None:
    """mkdir -p, a refused write named as such."""
    with refused_as_unwritable(folder):
        folder.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is flushed and replaces `target` in one step."""
    target = Path(target)
    _make_folder(target.parent)
    tmp = name_beside(target, ".", f".{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        # created by this process alone, with the mode the umask allows (mkstemp would force 0600)
        with refused_as_unwritable(target.parent):
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


OLD_FOLDER = ".old-"


@contextlib.contextmanager
def replacing_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside `target` to build a stage's whole output in; on success it takes
    `target`'s place, on failure it is removed and `target` stays as it was.

    A stage that cleared its output first and then failed (or was interrupted) would leave a half-written
    folder whose index names files that are gone; built beside and swapped in, the last good output stays
    whole until the new one is complete. The swap is two renames (a folder cannot replace a non-empty one
    in one step); a crash between them leaves the old output under a hidden name, which the next call
    puts back before it starts.
    """
    target = Path(target)
    _make_folder(target.parent)
    _restore_interrupted_swap(target)
    _remove_abandoned_builds(target)
    building = name_beside(target, ".", f".{os.getpid()}-{secrets.token_hex(4)}.building")
    _make_folder(building)
    try:
        yield building
        old = name_beside(target, OLD_FOLDER, "")
        if target.exists():
            os.replace(target, old)
        os.replace(building, target)
        fsync_path(target.parent)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)


BUILDING = re.compile(r"\.(\d+)-([0-9a-f]{8})\.building$")


def _remove_abandoned_builds(target: Path) -> None:
    """Remove half-built outputs of `target` left by a process that died without its `finally` (kill -9, a
    power cut); those of a live process (another run building now) are left alone."""
    for path in target.parent.glob(".*.building"):
        match = BUILDING.search(path.name)
        if match is None or name_beside(target, ".", match.group(0)) != path:
            continue
        if not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _restore_interrupted_swap(target: Path) -> None:
    """Put back an output that a crash left under its hidden name between the two renames of a swap."""
    old = name_beside(target, OLD_FOLDER, "")
    if old.exists():
        if target.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, target)
