"""Materialise a dataset as PNG files at the working resolution plus a manifest, split by class.

Sources: scikit-learn's bundled digits (offline, the default) and an image folder with one
subfolder per class (the torchvision / Hugging Face convention).
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from mvcaug.atomic import write_parquet
from mvcaug.errors import UserError
from mvcaug.params import PrepareParams

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "val", "reference", "test")
MANIFEST_COLUMNS = ("id", "path", "label", "split", "source", "sha256", "width", "height")


class DatasetError(UserError, ValueError):
    """The dataset source cannot be used as it is; the message names the file and the fix."""


@dataclass(frozen=True)
class SourceImage:
    """One image of a source, before splitting."""

    id: str
    label: str
    source: str  # where it came from: "digits:<index>" or the path relative to the image folder
    image: Image.Image


def load_digits_source() -> list[SourceImage]:
    """scikit-learn's 1,797 bundled 8x8 digits as white strokes on black, labels spelled out."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    items = []
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        array = np.clip(pixels * (255.0 / 16.0), 0, 255).astype(np.uint8)
        items.append(SourceImage(
            f"digits-{index:04d}", DIGIT_NAMES[int(target)], f"digits:{index}", Image.fromarray(array)
        ))
    return items


def load_imagefolder_source(folder: str | Path) -> list[SourceImage]:
    """Every image under folder/<class>/; corrupt files and empty classes stop with their path named."""
    root = Path(folder)
    if not str(folder) or not root.is_dir():
        raise DatasetError(
            f"image folder '{folder}' does not exist; set prepare.image_folder to a folder of class subfolders"
        )
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{root}: no class subfolders; put each class's images in {root}/<class>/")
    items = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(
                f"{class_dir}: empty class folder (no images with suffix {sorted(IMAGE_SUFFIXES)}); "
                "add images or remove the folder"
            )
        for file in files:
            items.append(SourceImage(
                image_id(class_dir.name, file), class_dir.name,
                file.relative_to(root).as_posix(), open_image(file),
            ))
    return items


def image_id(label: str, file: Path) -> str:
    """<class>-<stem>, plus the suffix when it is not .png, so a.png and a.jpg stay distinct."""
    suffix = file.suffix.lower()
    return f"{label}-{file.stem}" if suffix == ".png" else f"{label}-{file.stem}{suffix.replace('.', '_')}"


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image, turning every decoder failure into a DatasetError naming it."""
    try:
        if path.stat().st_size == 0:
            raise DatasetError(f"{path}: empty image file (0 bytes); replace or delete it")
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(f"{path}: corrupt or unreadable image ({err}); replace or delete it") from err


def load_source(params: PrepareParams) -> list[SourceImage]:
    """Dispatch on prepare.source."""
    if params.source == "digits":
        return load_digits_source()
    if params.source == "imagefolder":
        return load_imagefolder_source(params.image_folder)
    raise DatasetError(f"unknown dataset source '{params.source}'; set prepare.source to digits or imagefolder")


def split_rank(image_id: str, seed: int) -> str:
    """An image's place in its class's seeded order: a hash of its id, so it ignores the other images."""
    return hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()


def stratified_split(ids: list[str], labels: list[str], params: PrepareParams) -> list[str]:
    """Assign train/val/reference/test per image: fixed counts per class, in a seeded order of image ids
    (train first, then validation, then the held-out reference pool, then test).

    The order is stable as the dataset grows: an added image takes its own place in it and moves
    at most the images ranked after it, so the test split stays comparable across commits and
    captions/embeddings of images that stay in train are reused (paths.cache).
    """
    splits = [""] * len(labels)
    need = params.train_per_class + params.val_per_class + params.reference_per_class + 1
    for label in sorted(set(labels)):
        members = [i for i, item in enumerate(labels) if item == label]
        if len(members) < need:
            raise DatasetError(
                f"class '{label}' has {len(members)} images; the split needs at least {need} "
                "(prepare.train_per_class + val_per_class + reference_per_class + 1 test image): "
                "lower them or add images"
            )
        order = sorted(members, key=lambda index: split_rank(ids[index], params.seed))
        n_test = params.test_per_class or len(members)
        cut_train = params.train_per_class
        cut_val = cut_train + params.val_per_class
        cut_reference = cut_val + params.reference_per_class
        for rank, index in enumerate(order):
            if rank < cut_train:
                splits[index] = "train"
            elif rank < cut_val:
                splits[index] = "val"
            elif rank < cut_reference:
                splits[index] = "reference"
            elif rank < cut_reference + n_test:
                splits[index] = "test"
    return splits


def to_working_image(image: Image.Image, resolution: int, channels: int) -> Image.Image:
    """Convert to the working mode and size (bicubic), so every later stage sees one format."""
    mode = "L" if channels == 1 else "RGB"
    converted = image.convert(mode)
    if converted.size != (resolution, resolution):
        converted = converted.resize((resolution, resolution), Image.Resampling.BICUBIC)
    return converted


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def prepare_dataset(params: PrepareParams, out_dir: str | Path) -> pa.Table:
    """Write images/<split>/<label>/<id>.png and manifest.parquet under out_dir; return the manifest."""
    out_dir = Path(out_dir)
    # 1. Read and split the source.
    items = load_source(params)
    splits = stratified_split([item.id for item in items], [item.label for item in items], params)
    # 2. Write images, fresh: the folder is this stage's output alone.
    shutil.rmtree(out_dir / "images", ignore_errors=True)
    rows: dict[str, list] = {k: [] for k in MANIFEST_COLUMNS}
    for item, split in tqdm(list(zip(items, splits)), desc="prepare", unit="img"):
        if not split:
            continue
        image = to_working_image(item.image, params.resolution, params.channels)
        data = png_bytes(image)
        rel = Path("images") / split / item.label / f"{item.id}.png"
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        for key, value in (
            ("id", item.id), ("path", rel.as_posix()), ("label", item.label), ("split", split),
            ("source", item.source),
            ("sha256", hashlib.sha256(data).hexdigest()), ("width", image.width), ("height", image.height),
        ):
            rows[key].append(value)
    # 3. The manifest last, atomically: its presence means the images are complete.
    manifest = pa.table(rows)
    write_parquet(out_dir / "manifest.parquet", manifest)
    log.info("prepared %d images: %s", manifest.num_rows,
             {s: rows["split"].count(s) for s in SPLITS})
    return manifest
