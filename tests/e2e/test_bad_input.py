"""Bad input stops the prepare stage (the real CLI, through Prefect) with one clear line, no traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.workspace import run

pytestmark = pytest.mark.slow


def write_params(folder: Path, **prepare) -> Path:
    path = folder / "params.yaml"
    base = {"train_per_class": 2, "val_per_class": 1, "test_per_class": 1, "source": "imagefolder"}
    path.write_text(yaml.safe_dump({"prepare": {**base, **prepare}}))
    return path


def image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / "images" / label).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / label / f"{i}.png")
    return root / "images"


def prepare_error(folder: Path) -> str:
    result = run(["python", "-m", "flows.prepare"], folder, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr.split("error:")[-1]
    return result.stderr


def test_corrupt_image(tmp_path: Path) -> None:
    images = image_folder(tmp_path)
    (images / "dog" / "broken.png").write_bytes(b"\x89PNG not really an image")
    write_params(tmp_path, image_folder=str(images))
    message = prepare_error(tmp_path)
    assert "broken.png" in message and "corrupt" in message


def test_empty_class_folder(tmp_path: Path) -> None:
    images = image_folder(tmp_path)
    (images / "bird").mkdir()
    write_params(tmp_path, image_folder=str(images))
    message = prepare_error(tmp_path)
    assert "bird" in message and "empty class folder" in message


def test_unknown_source(tmp_path: Path) -> None:
    write_params(tmp_path, source="mnist-from-the-web")
    message = prepare_error(tmp_path)
    assert "prepare.source" in message and "mnist-from-the-web" in message and "digits" in message
