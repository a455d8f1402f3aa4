"""Atomic, durable writes: all or nothing, the umask's mode, a full disk named."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from mvcaug.io.atomic import atomic_path, name_beside, replacing_folder, write_json, write_text
from mvcaug.core.errors import DiskFullError


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


@pytest.mark.parametrize("name", ["n" * 255, "é" * 125 + ".png", "a" * 230 + ".parquet"])
def test_a_name_at_the_length_limit_is_written_and_its_temp_name_stays_valid(tmp_path, name):
    target = tmp_path / name
    assert len(name.encode()) <= 255
    write_text(target, "first")
    write_text(target, "second")  # over an existing file: the rename of the temp file
    assert target.read_text() == "second" and [p.name for p in tmp_path.iterdir()] == [name]
    with replacing_folder(tmp_path / f"{name[:-4]}dir") as building:  # the .building and .old- names
        (building / "a.txt").write_text("x")
    with replacing_folder(tmp_path / f"{name[:-4]}dir") as building:
        (building / "b.txt").write_text("y")
    assert [p.name for p in (tmp_path / f"{name[:-4]}dir").iterdir()] == ["b.txt"]


def test_two_long_names_get_distinct_temp_names(tmp_path):
    one, two = tmp_path / ("x" * 250 + "1"), tmp_path / ("x" * 250 + "2")
    assert name_beside(one, ".old-", "") != name_beside(two, ".old-", "")
    assert name_beside(one, ".old-", "") == name_beside(one, ".old-", "")  # found again after a crash
    assert all(len(name_beside(p, ".", ".1234567-abcdef01.building").name.encode()) <= 255 for p in (one, two))


def as_other_user(action) -> str:
    """Run `action()` in a child process that may not write to folders it does not own, and return the
    error it raised as 'ClassName: message' ('' when none). Root may write anywhere, so as root the child
    becomes nobody first."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        os.close(read)
        outcome = ""
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            action()
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            outcome = f"{type(err).__name__}: {err}"
        os.write(write, outcome.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        outcome = pipe.read()
    os.waitpid(pid, 0)
    return outcome


def test_a_read_only_output_folder_is_one_line_naming_it(tmp_path, monkeypatch):
    out = tmp_path / "outputs"
    out.mkdir()
    write_text(out / "metrics.json", "the last good one")
    out.chmod(0o555)
    monkeypatch.chdir(tmp_path)  # the child reaches it by a relative path (tmp_path's parents are private)
    try:
        for action in (lambda: write_text("outputs/metrics.json", "new"),
                       lambda: write_text("outputs/new/file.txt", "new"),
                       lambda: replacing_folder("outputs/images").__enter__()):
            outcome = as_other_user(action)
            assert outcome.startswith("OutputNotWritableError: outputs"), outcome
            assert "cannot write here" in outcome and "make the folder writable" in outcome and "\n" not in outcome
    finally:
        out.chmod(0o755)
    assert (out / "metrics.json").read_text() == "the last good one" and sorted(os.listdir(out)) == ["metrics.json"]


def test_a_half_built_output_of_a_dead_process_is_removed_and_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from mvcaug.io.atomic import name_beside, replacing_folder

    target = tmp_path / "data" / "01_prepared"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = name_beside(target, ".", f".{int(dead.stdout)}-0123abcd.building")  # as kill -9 leaves it
    live = name_beside(target, ".", f".{os.getpid()}-89abcdef.building")  # another build, running now
    other = name_beside(tmp_path / "data" / "02_captions", ".", f".{int(dead.stdout)}-0123abcd.building")
    for folder in (abandoned, live, other):
        (folder / "images").mkdir(parents=True)
    with replacing_folder(target) as building:
        (building / "manifest.parquet").write_text("new")
    assert not abandoned.exists() and live.is_dir() and other.is_dir()  # only this target's, only the dead one's
    assert (target / "manifest.parquet").read_text() == "new"
