"""Plan a dataset at the working resolution: which images, which split, what PNG bytes to write.

Sources: scikit-learn's bundled digits (offline, the default) and an image folder with one subfolder
per class (the torchvision / Hugging Face convention: images in nested subfolders of a class belong to
it; hidden files such as AppleDouble `._x.png` are skipped). The decisions are made here and refused
with the file named when they would give a silently wrong result: a single class, the same image under
two labels (a label conflict), an image over PIL's decompression-bomb limit. The same image twice in one
class is kept once (a warning names the copies), so it can never sit in train and test at once.
High-bit-depth and float images are scaled to 8 bits by their own range, not clipped. The prepare task
(tasks/prepare.py) writes the files.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from mvcaug.errors import UserError
from mvcaug.params import PrepareParams

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "val", "reference", "test")
MANIFEST_COLUMNS = ("id", "path", "label", "split", "source", "sha256", "width", "height")
MODEL_COLUMNS = ("model_path", "model_sha256")
"""With prepare.model_resolution: each training image at the model's resolution ("" for the other splits)."""


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


def is_image_file(path: Path) -> bool:
    """An image by its suffix, and not hidden (AppleDouble `._x.png`, editor leftovers)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def class_images(class_dir: Path) -> list[Path]:
    """The images of a class folder, in its nested subfolders too (as torchvision's ImageFolder reads
    them), hidden files and folders left out, in sorted order."""
    return sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image_file(p)
                  and not any(part.startswith(".") for part in p.relative_to(class_dir).parts))


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
        files = class_images(class_dir)
        if not files:
            raise DatasetError(
                f"{class_dir}: empty class folder (no images with suffix {sorted(IMAGE_SUFFIXES)}); "
                "add images or remove the folder"
            )
        for file in files:
            items.append(SourceImage(
                image_id(class_dir.name, file.relative_to(class_dir)), class_dir.name,
                file.relative_to(root).as_posix(), open_image(file),
            ))
    return items


def image_id(label: str, file: Path) -> str:
    """<class>-<stem>, plus the suffix when it is not .png, so a.png and a.jpg stay distinct; a file in a
    nested folder gets the folders too (<class>-<sub>_<stem>), so files directly in the class keep their id."""
    suffix = file.suffix.lower()
    stem = "_".join([*file.parent.parts, file.stem]) if file.parent != Path(".") and file.parent.parts else file.stem
    return f"{label}-{stem}" if suffix == ".png" else f"{label}-{stem}{suffix.replace('.', '_')}"


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image, turning every decoder failure into a DatasetError naming it."""
    try:
        if path.stat().st_size == 0:
            raise DatasetError(f"{path}: empty image file (0 bytes); replace or delete it")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return image.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DatasetError(f"{path}: {err.args[0].split('.')[0]}, over PIL's limit of {Image.MAX_IMAGE_PIXELS} "
                           "pixels against decompression bombs; downscale the image or remove it") from err
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


def eight_bit(image: Image.Image) -> Image.Image:
    """An 8-bit image of the same content: 16-bit integers divided by 257; 32-bit integers as 8 or 16 bit
    when they fit, else scaled from their own range; floats in [0, 1] times 255, others scaled from their own
    range. (PIL's convert would clip all of these to 255, or floats in [0, 1] to black.)"""
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return image
    array = np.asarray(image, dtype=np.float64)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and 255 < high <= 65535):
        scaled = array / 257.0
    elif image.mode == "I" and low >= 0 and high <= 255:
        scaled = array
    elif image.mode == "F" and low >= 0 and high <= 1:
        scaled = array * 255.0
    else:
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), "L")


def to_working_image(image: Image.Image, resolution: int, channels: int) -> Image.Image:
    """Convert to the working mode and size (bicubic), so every later stage sees one format."""
    mode = "L" if channels == 1 else "RGB"
    converted = eight_bit(image).convert(mode)
    if converted.size != (resolution, resolution):
        converted = converted.resize((resolution, resolution), Image.Resampling.BICUBIC)
    return converted


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class DatasetPlan:
    """What the prepare task writes: (path relative to the output folder, PNG bytes) and the manifest."""

    files: list[tuple[str, bytes]]
    manifest: pa.Table


def without_duplicates(items: list[SourceImage], pngs: list[bytes]) -> tuple[list[SourceImage], list[bytes]]:
    """The items with each image content (its working PNG) once; the same content under two labels is a
    label conflict (an error naming both), twice in one class a copy (the first kept, a warning)."""
    first: dict[str, SourceImage] = {}
    kept_items, kept_pngs, copies = [], [], defaultdict(list)
    for item, data in zip(items, pngs):
        digest = hashlib.sha256(data).hexdigest()
        if digest in first:
            if first[digest].label != item.label:
                raise DatasetError(
                    f"{item.source} (class '{item.label}') is the same image as {first[digest].source} (class "
                    f"'{first[digest].label}'): one image cannot have two labels; delete or move one of them")
            copies[first[digest].source].append(item.source)
            continue
        first[digest] = item
        kept_items.append(item)
        kept_pngs.append(data)
    for source, same in copies.items():
        log.warning("%s appears %d more time(s) in its class (%s): kept once, so no copy lands in another split",
                    source, len(same), ", ".join(same))
    return kept_items, kept_pngs


def plan_dataset(params: PrepareParams) -> DatasetPlan:
    """Read, check, convert and split the source: the files to write and the manifest."""
    # 1. Read the source, in the working format.
    items = load_source(params)
    classes = sorted({item.label for item in items})
    if len(classes) < 2:
        raise DatasetError(f"{params.image_folder if params.source == 'imagefolder' else params.source}: one class "
                           f"only ({', '.join(classes) or 'none'}); a classifier needs at least two class folders")
    images = [to_working_image(item.image, params.resolution, params.channels)
              for item in tqdm(items, desc="prepare", unit="img")]
    # 2. No image twice: a label conflict stops, a copy within a class is kept once.
    items, pngs = without_duplicates(items, [png_bytes(image) for image in images])
    # 3. Split and list; with a model resolution, the training images once more at it, from the source.
    splits = stratified_split([item.id for item in items], [item.label for item in items], params)
    columns = MANIFEST_COLUMNS + (MODEL_COLUMNS if params.model_resolution else ())
    files, rows = [], {k: [] for k in columns}
    for item, data, split in zip(items, pngs, splits):
        if not split:
            continue
        rel = f"images/{split}/{item.label}/{item.id}.png"
        files.append((rel, data))
        width, height = Image.open(io.BytesIO(data)).size
        values = [("id", item.id), ("path", rel), ("label", item.label), ("split", split), ("source", item.source),
                  ("sha256", hashlib.sha256(data).hexdigest()), ("width", width), ("height", height)]
        if params.model_resolution:
            model_rel, model_hash = "", ""
            if split == "train":
                model_data = png_bytes(to_working_image(item.image, params.model_resolution, params.channels))
                model_rel, model_hash = f"images_model/train/{item.label}/{item.id}.png", hashlib.sha256(model_data).hexdigest()
                files.append((model_rel, model_data))
            values += [("model_path", model_rel), ("model_sha256", model_hash)]
        for key, value in values:
            rows[key].append(value)
    return DatasetPlan(files, pa.table(rows))
