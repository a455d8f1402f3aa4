"""Bad input stops the prepare stage (the real CLI, through Prefect) with one clear line, no traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.workspace import OWN_IMAGES, run

pytestmark = pytest.mark.slow


def write_params(folder: Path, **prepare) -> Path:
    path = folder / "params.yaml"
    base = {"train_per_class": 2, "val_per_class": 1, "test_per_class": 1, "source": "imagefolder"}
    path.write_text(yaml.safe_dump({"prepare": {**base, **prepare}, **OWN_IMAGES}))
    return path


def image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / "images" / label).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / label / f"{i}.png")
    return root / "images"


def cli_error(folder: Path) -> str:
    """The one line the real stage prints (through Prefect, as `dvc repro` runs it): exit 1, no traceback."""
    result = run(["python", "-m", "flows.prepare"], folder, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def domain_error(params_file: Path) -> str:
    """What the domain says about the same input, called in-process (tests/unit/test_prepare.py checks its words)."""
    from mvcaug.core.errors import UserError
    from mvcaug.io.params_file import load_params
    from tasks.prepare import prepare_dataset

    with pytest.raises(UserError) as info:
        prepare_dataset(load_params(params_file).prepare, params_file.parent / "in-process")
    return f"error: {info.value}"


def corrupt_image(folder: Path) -> dict:
    images = image_folder(folder)
    (images / "dog" / "broken.png").write_bytes(b"\x89PNG not really an image")
    return {"image_folder": str(images)}


def empty_class_folder(folder: Path) -> dict:
    images = image_folder(folder)
    (images / "bird").mkdir()
    return {"image_folder": str(images)}


def unknown_source(folder: Path) -> dict:
    return {"source": "mnist-from-the-web"}


@pytest.mark.parametrize("case", [corrupt_image, empty_class_folder, unknown_source])
def test_bad_input_reaches_the_terminal_as_the_domains_one_line(tmp_path: Path, case) -> None:
    """Not the wording (the unit tests hold it) but the path: the real CLI prints exactly the domain's
    message, once, on one line, and nothing else of the error."""
    params_file = write_params(tmp_path, **case(tmp_path))
    if case is unknown_source:  # refused while loading the params, before any stage code
        from mvcaug.core.params import ParamsError
        from mvcaug.io.params_file import load_params

        with pytest.raises(ParamsError) as info:
            load_params(params_file)
        expected = f"error: {info.value}"
    else:
        expected = domain_error(params_file)
    # the stage names its params file as it was given (relative to the project), the test by its full path
    assert cli_error(tmp_path).replace(f"{tmp_path}/", "") == expected.replace(f"{tmp_path}/", "")
