"""Model sources: a local folder or a hub id, checked before anything loads; relative paths against the project."""

from __future__ import annotations

import os

import pytest

from mvcaug.io.model_sources import ModelError, local_folder, looks_local, resolve_source


@pytest.mark.parametrize(("value", "local"), [("/abs/model", True), ("./model", True), ("~/model", True),
                                               ("models/sd/v15", True), ("org/name", False), ("name", False)])
def test_what_counts_as_a_local_path(value, local):
    assert looks_local(value) is local


def test_a_relative_folder_is_found_from_the_project_root_whatever_the_working_directory(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "models" / "sd").mkdir(parents=True)
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a Dask worker started in another folder
    assert local_folder("models/sd", root) == (root / "models" / "sd").resolve()
    assert local_folder("models/none", root) is None


def test_a_local_path_that_is_not_a_folder_fails_naming_the_param(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelError) as info:
        resolve_source(str(tmp_path / "missing"), "finetune.pretrained", "a Stable Diffusion folder")
    message = str(info.value)
    assert message.startswith(f"finetune.pretrained '{tmp_path / 'missing'}' is not a folder")
    assert "HF_HUB_OFFLINE" not in message  # not set here, so not mentioned
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
        resolve_source("./missing", "embed.encoder", "a text encoder folder")
    with pytest.raises(ModelError, match="embed.encoder is empty"):
        resolve_source("", "embed.encoder", "a text encoder folder")
    assert resolve_source("org/model", "embed.encoder", "x") == "org/model"  # a hub id is left to the hub client
    assert resolve_source(str(tmp_path), "embed.encoder", "x") == str(tmp_path.resolve())
    assert os.environ["HF_HUB_OFFLINE"] == "1"
