"""Reading images for reports and grids: every file is closed once its pixels are in memory."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from mvcaug.data.images import read_image


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_thousand_images_held_in_memory_hold_no_open_file(tmp_path):
    """A Caltech-101-sized report keeps ~1,800 samples until it renders: above the usual 1,024 open-file
    limit if each kept its file open."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(1100):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    before = open_files()
    images = [read_image(path) for path in paths]
    assert open_files() == before
    assert len(images) == 1100 and images[-1].size == (4, 4) and images[-1].getpixel((0, 0)) is not None
