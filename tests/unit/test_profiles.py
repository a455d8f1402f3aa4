"""Running with a profile: one command checks it, keeps the old params.yaml and writes the profile there;
the profile holds every key, and its classifiers start from local pretrained weights or the run refuses."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from mvcaug.core.errors import MissingInputError
from mvcaug.core.params import _section_class
from mvcaug.io.params_file import load_params
from flows.profile import BACKUP, apply_profile

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "profiles" / "sd15.yaml"


def project_copy(tmp_path: Path, weights: bool) -> Path:
    """A folder laid out like the project root: the repository's params.yaml, and (with `weights`) the
    classifier weights files the profile names."""
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(ROOT / "params.yaml", folder / "params.yaml")
    if weights:
        for settings in load_params(PROFILE).train.model_settings.values():
            (folder / settings.pretrained).parent.mkdir(parents=True, exist_ok=True)
            save_file({"fc.weight": torch.zeros(2, 2)}, folder / settings.pretrained)
    return folder


def test_the_profile_holds_the_captioner_and_the_pretrained_classifiers():
    raw = yaml.safe_load(PROFILE.read_text())
    caption_keys = {item.name for item in dataclasses.fields(_section_class("caption"))}
    assert caption_keys <= set(raw["caption"]), caption_keys - set(raw["caption"])
    params = load_params(PROFILE)
    assert params.caption.backend == "blip2" and raw["caption"]["model"] == "Salesforce/blip2-opt-2.7b"
    for model in params.train.models:
        assert params.train.model_settings[model].pretrained == f"models/{model}.safetensors"


def test_applying_the_profile_writes_it_as_params_and_keeps_the_old_one(tmp_path, monkeypatch):
    folder = project_copy(tmp_path, weights=True)
    monkeypatch.chdir(folder)  # the profile's paths are relative to the project root, as dvc repro runs
    before = (folder / "params.yaml").read_text()
    done = subprocess.run([sys.executable, "-m", "flows.profile", str(PROFILE)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (folder / "params.yaml").read_text() == PROFILE.read_text()  # comments included
    assert load_params(folder / "params.yaml") == load_params(PROFILE)
    assert (folder / ".mvcaug-run" / BACKUP).read_text() == before
    assert "dvc repro" in done.stderr


def test_a_missing_classifier_weights_file_stops_the_profile_naming_the_key(tmp_path, monkeypatch):
    folder = project_copy(tmp_path, weights=False)
    monkeypatch.chdir(folder)
    before = (folder / "params.yaml").read_text()
    with pytest.raises(MissingInputError) as info:
        apply_profile(PROFILE, folder / "params.yaml")
    message = str(info.value)
    assert "\n" not in message and "train.model_settings.resnet50.pretrained" in message
    assert message.startswith("models/resnet50.safetensors: no such classifier weights file")
    assert (folder / "params.yaml").read_text() == before  # nothing written
    done = subprocess.run([sys.executable, "-m", "flows.profile", str(PROFILE)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [f"error: {message}"]


def test_the_train_stage_refuses_to_start_without_the_weights_naming_the_key(tmp_path, monkeypatch):
    """Before any cell (or Dask worker): params written by hand get the same check as the profile command."""
    from flows.train import run_train_flow

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        "train:\n  model_settings:\n    small_cnn: {pretrained: weights/small_cnn.safetensors}\n")
    with pytest.raises(MissingInputError, match=r"fix train\.model_settings\.small_cnn\.pretrained"):
        run_train_flow("params.yaml")
