"""Atomic, durable writes: all or nothing, the umask's mode, a full disk named."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from mvcaug.atomic import atomic_path, write_json, write_text
from mvcaug.errors import DiskFullError


def test_files_get_the_mode_the_umask_gives(tmp_path):
    previous = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        os.umask(0o027)
        write_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644  # mkstemp would have made it 0600
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "result.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_full_disk_names_the_file_and_keeps_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "shard" / "image.png"
    write_text(target, "the finished version")

    def no_space(self: Path, data: str, *args, **kwargs) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)  # what the disk does when it is full
    with pytest.raises(DiskFullError) as info:
        write_text(target, "a new version")
    assert str(info.value).startswith(f"{target}: no space left on device; free some space and rerun")
    monkeypatch.undo()
    assert target.read_text() == "the finished version"
    assert [p.name for p in target.parent.iterdir()] == ["image.png"]
