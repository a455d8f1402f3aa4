"""The base workspaces `make test` builds once for both of its pytest runs (tests.workspace.shared_workspace), and
the one a builder hands over on its way (offer_shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mvcaug.io.locks import exclusive_lock
from tests.workspace import SHARED_VARIABLE, offer_shared, shared_workspace


def counting_build(calls: list[Path], fail: bool = False):
    def build(folder: Path) -> Path:
        calls.append(folder)
        (folder / "params.yaml").write_text("built\n")
        if fail:
            raise RuntimeError("dvc repro failed")
        return folder
    return build


def test_without_the_variable_each_run_builds_its_own_in_the_fallback(tmp_path, monkeypatch):
    monkeypatch.delenv(SHARED_VARIABLE, raising=False)
    calls: list[Path] = []
    fallback = tmp_path / "own"
    fallback.mkdir()
    assert shared_workspace("base", counting_build(calls), fallback) == fallback
    assert calls == [fallback] and (fallback / "params.yaml").read_text() == "built\n"


def test_with_the_variable_the_second_asker_gets_the_first_build(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARED_VARIABLE, str(tmp_path / "shared"))
    calls: list[Path] = []
    first = shared_workspace("base", counting_build(calls), tmp_path / "unused1")
    second = shared_workspace("base", counting_build(calls), tmp_path / "unused2")
    assert first == second == tmp_path / "shared" / "base" and len(calls) == 1
    assert (first / "params.yaml").read_text() == "built\n" and not (tmp_path / "unused1").exists()


def test_a_failed_build_leaves_nothing_ready_and_the_next_asker_builds_again(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARED_VARIABLE, str(tmp_path / "shared"))
    calls: list[Path] = []
    with pytest.raises(RuntimeError, match="dvc repro failed"):
        shared_workspace("base", counting_build(calls, fail=True), tmp_path / "unused")
    assert not (tmp_path / "shared" / "base").exists()
    ready = shared_workspace("base", counting_build(calls), tmp_path / "unused")
    assert len(calls) == 2 and (ready / "params.yaml").read_text() == "built\n"


def test_an_offered_workspace_is_what_the_next_asker_gets_without_a_build(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARED_VARIABLE, str(tmp_path / "shared"))
    source = tmp_path / "half-way"
    (source / "data").mkdir(parents=True)
    (source / "data/mixed.parquet").write_text("mixed\n")
    offer_shared("base", source)
    (source / "data/mixed.parquet").write_text("the builder went on\n")  # its later stages never reach the copy
    calls: list[Path] = []
    ready = shared_workspace("base", counting_build(calls), tmp_path / "unused")
    assert calls == [] and (ready / "data/mixed.parquet").read_text() == "mixed\n"
    offer_shared("base", source)  # once built, never replaced
    assert (ready / "data/mixed.parquet").read_text() == "mixed\n"


def test_an_offer_while_another_process_builds_it_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARED_VARIABLE, str(tmp_path / "shared"))
    source = tmp_path / "half-way"
    source.mkdir()
    (source / "params.yaml").write_text("offered\n")
    with exclusive_lock(tmp_path / "shared" / "base.lock"):  # the lock a building process holds
        offer_shared("base", source)
    assert not (tmp_path / "shared" / "base").exists()
    assert not (tmp_path / "shared" / "base.building").exists()  # nor began a copy
    offer_shared("base", source)
    assert ((tmp_path / "shared" / "base") / "params.yaml").read_text() == "offered\n"
