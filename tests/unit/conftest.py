"""Shared small fixtures for the unit tests: tiny image folders, a small prepared digits split,
embeddings whose every value names its origin, and a tiny scratch denoiser."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Keep the tiny models on one thread: the machine has two cores shared with other work, and
# thread start-up costs more than it saves at these sizes.
torch.set_num_threads(1)
os.environ.setdefault("TQDM_DISABLE", "1")

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_image(rng: np.random.Generator, size: tuple[int, int], mode: str) -> Image.Image:
    """A random blob on a plain background, so it has a foreground the captioner can measure."""
    width, height = size
    channels = 3 if mode == "RGB" else 1
    array = np.zeros((height, width, channels), dtype=np.uint8)
    y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
    y1, x1 = y0 + rng.integers(2, height // 2 + 1), x0 + rng.integers(2, width // 2 + 1)
    array[y0:y1, x0:x1] = rng.integers(128, 256, size=channels)
    array = np.clip(array.astype(np.int16) + rng.integers(0, 20, size=array.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(array[..., 0] if channels == 1 else array, mode)


def write_imagefolder(
    root: Path, per_class: dict[str, int], size: tuple[int, int] = (10, 14), mode: str = "RGB", seed: int = 0
) -> Path:
    """root/<class>/<k>.png for each class, with `per_class[class]` random images."""
    rng = np.random.default_rng(seed)
    for label, count in per_class.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(count):
            make_image(rng, size, mode).save(folder / f"img{k:02d}.png")
    return root


@pytest.fixture
def make_imagefolder():
    """The write_imagefolder helper, for tests that need their own class layout."""
    return write_imagefolder


@pytest.fixture
def imagefolder(tmp_path: Path) -> Path:
    """Two classes, six RGB 10x14 PNGs each."""
    return write_imagefolder(tmp_path / "source", {"cat": 6, "dog": 6})


@pytest.fixture(scope="session")
def digits_prepared(tmp_path_factory: pytest.TempPathFactory):
    """The bundled digits at 16 px, 6 train / 4 val / 4 test images per class: (folder, manifest)."""
    from mvcaug.core.params import PrepareParams
    from tasks.prepare import prepare_dataset

    folder = tmp_path_factory.mktemp("digits")
    params = PrepareParams(train_per_class=6, val_per_class=4, test_per_class=4, resolution=16, channels=1)
    manifest = prepare_dataset(params, folder)
    return folder, manifest


def provenance_embeddings(count: int, m: int, d: int) -> np.ndarray:
    """(count, m, d) float32 where element (k, i, j) is k*m*d + i*d + j: every value is unique and
    tells which embedding, row and column it came from (exact in float32 for small sizes)."""
    assert count * m * d < 2**24
    return np.arange(count * m * d, dtype=np.float32).reshape(count, m, d)


@pytest.fixture
def provenance():
    """The provenance_embeddings helper."""
    return provenance_embeddings


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)

