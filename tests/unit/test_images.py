"""Reading images: every file is closed once its pixels are in memory; a prepared dataset's splits come from one
loader, in manifest order; a task image among outside images is refused, naming the split."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from mvcaug.data.images import TaskImageError, refuse_task_images
from mvcaug.io.images import load_images, load_split, load_splits, read_image


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


def test_every_split_is_read_in_manifest_order_by_the_one_loader(digits_prepared):
    folder, manifest = digits_prepared
    splits = load_splits(folder, None, 1)
    assert list(splits) == sorted(set(manifest.column("split").to_pylist()))  # None: every split, sorted
    for name, images in splits.items():
        rows = [row for row in manifest.to_pylist() if row["split"] == name]
        assert images.ids == [row["id"] for row in rows] and images.sha256 == [row["sha256"] for row in rows]
        assert images.pixels.dtype == torch.float32 and torch.equal(images.pixels, load_images(folder, rows, 1).pixels)
        assert torch.equal(load_split(folder, name, 1).pixels, images.pixels)
    assert list(load_splits(folder, ("val", "train"), 1)) == ["val", "train"]  # in the order asked for


def test_an_outside_image_equal_to_a_task_image_is_refused_naming_the_first_split_that_holds_it(digits_prepared):
    folder, _ = digits_prepared
    splits = load_splits(folder, ("train", "val", "test"), 1)
    outside = splits["train"].subset([0, 1])
    refuse_task_images(outside, {"test": splits["test"]}, "extra", "image", "remove them")  # disjoint: passes
    with pytest.raises(TaskImageError, match=rf"^extra: 2 image\(s\) equal images of the task's train split, e.g. "
                                             rf"{outside.ids[0]} \(a.png\) = {outside.ids[0]}; remove them$"):
        refuse_task_images(outside, splits, "extra", "image", "remove them", {outside.ids[0]: "a.png"})

