"""A content-addressed cache of per-item results: (namespace, content hash) -> bytes, in SQLite.

Captioning and embedding are pure functions of an item's content and the model's configuration, so
their results can be kept across runs: adding K images to N then costs K model calls, not N + K.
The namespace is a digest of the model configuration (a different model never sees another's
entries); the key is the item's content hash. SQLite gives atomic, crash-safe commits and safe
concurrent readers without a server, and the file lives outside DVC's outputs (which DVC deletes
before a stage runs), so it survives `dvc repro` and never changes what a stage writes.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from mvcaug.io.digests import json_digest

__all__ = ["config_digest", "text_key", "folder_listing", "ContentCache", "open_cache", "store_quietly"]

log = logging.getLogger(__name__)
CACHE_FILE = "content.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID
"""
# SQLite allows at most 999 bound variables per statement in old builds; stay well below.
LOOKUP_CHUNK = 500


def config_digest(config: Mapping[str, Any]) -> str:
    """A stable namespace for a configuration: sha256 of its canonical JSON."""
    return json_digest(config)


def text_key(text: str) -> str:
    """The content hash of a text."""
    return hashlib.sha256(text.encode()).hexdigest()


def folder_listing(path: str | Path) -> list[tuple[str, int, int]] | str:
    """(relative path, size, mtime) of every file under a local model folder; a hub id as it is.

    Reading the weights' bytes would cost seconds for a multi-GB model on every run; a replaced file
    changes its size or modification time, which is enough to keep stale entries from being served.
    """
    folder = Path(path)
    if not folder.is_dir():
        return str(path)
    return [
        (file.relative_to(folder).as_posix(), file.stat().st_size, file.stat().st_mtime_ns)
        for file in sorted(folder.rglob("*"))
        if file.is_file()
    ]


class ContentCache:
    """get_many / put_many over one SQLite file; each put_many is one transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # WAL: readers never block the writer; a killed writer leaves the last committed state.
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, bytes]:
        """The stored values of those keys that are present."""
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        with closing(self._connect()) as db:
            for start in range(0, len(unique), LOOKUP_CHUNK):
                chunk = unique[start : start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, value FROM entries WHERE namespace = ? AND key IN ({marks})",
                    [namespace, *chunk],
                )
                found.update((key, bytes(value)) for key, value in rows)
        return found

    def put_many(self, namespace: str, items: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> int:
        """Store (key, value) pairs in one transaction: all of them, or none when one is bad."""
        pairs = items.items() if isinstance(items, Mapping) else items
        stored = 0

        def rows() -> Iterator[tuple[str, str, bytes]]:
            nonlocal stored
            for key, value in pairs:
                if not isinstance(value, bytes):
                    raise TypeError(f"cache values must be bytes; '{key}' holds {type(value).__name__}")
                stored += 1
                yield namespace, key, value

        with closing(self._connect()) as db, db:
            # an existing key keeps its first value: the same content and model give the same result
            db.executemany("INSERT OR IGNORE INTO entries (namespace, key, value) VALUES (?, ?, ?)", rows())
        return stored

    def count(self, namespace: str | None = None) -> int:
        with closing(self._connect()) as db:
            if namespace is None:
                return db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            return db.execute("SELECT COUNT(*) FROM entries WHERE namespace = ?", [namespace]).fetchone()[0]


def open_cache(cache_dir: str | Path) -> ContentCache | None:
    """The cache under paths.cache, or None when it is off ("") or unusable (read-only folder, a file in
    the way, a broken database): the stage then runs without it, with a warning. The results are the
    same either way, only slower, so an unusable cache never stops a stage."""
    if not str(cache_dir):
        return None
    path = Path(cache_dir) / CACHE_FILE
    try:
        cache = ContentCache(path)
        with closing(cache._connect()) as db:
            db.execute("BEGIN IMMEDIATE")  # can we write? (takes the write lock, writes nothing)
            db.execute("ROLLBACK")
        return cache
    except (OSError, sqlite3.Error) as err:
        log.warning("paths.cache: %s is not usable (%s); running without the cache (same results, only slower). "
                    "Fix the folder (permissions, free space) or set paths.cache: \"\" to silence this", path, err)
        return None


def store_quietly(cache: ContentCache, namespace: str, items: Mapping[str, bytes]) -> int:
    """put_many, but a cache that fails now (disk full, read-only) only logs a warning: what it would
    have kept is recomputed next time."""
    try:
        return cache.put_many(namespace, items)
    except (OSError, sqlite3.Error) as err:
        log.warning("paths.cache: could not store %d entries in %s (%s); they will be recomputed next time",
                    len(items), cache.path, err)
        return 0
