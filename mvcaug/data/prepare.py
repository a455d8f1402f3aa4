"""Plan a dataset at the working resolution: which images, which split, what PNG bytes to write.

Sources: scikit-learn's bundled digits (offline, the default) and an image folder with one subfolder
per class (the torchvision / Hugging Face convention: images in nested subfolders of a class belong to
it; hidden files such as AppleDouble `._x.png` are skipped). The decisions are made here and refused
with the file named when they would give a silently wrong result: a single class, the same image under
two labels (a label conflict), two files that would get one image id (or one too long for a file name), two
class folders whose names differ only in case or Unicode form, a dangling symlink, an image over PIL's
decompression-bomb limit, a name that is not UTF-8 or holds a control character, fewer images than the
split asks for. The same image twice in one class is kept once (a warning names the copies), so it can
never sit in train and test at once; files that are not read (no image suffix, beside the class folders,
in a symlinked subfolder) are warned about, as is an image folder left unread by prepare.source: digits.

Pixels: EXIF orientation is applied; high-bit-depth and float images are scaled to 8 bits by their own
range, not clipped (NaN and infinite pixels are left out of the range, see `eight_bit`); transparency is
composited on white (`ALPHA_BACKGROUND`); a non-square source becomes square by `prepare.resize`; a source
much smaller than the size it is written at is warned about.

A source is listed first (ids, labels, no pixels; mvcaug.io.image_folders walks and reads a folder, applying the
rules on names and ids defined here), then converted one image at a time: the caller (tasks/prepare.py) writes
each working PNG as it comes and only its hash stays in memory, so the memory `prepare` needs does not grow with
the number of images.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
import os
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import ExifTags, Image, ImageOps
from tqdm import tqdm

from mvcaug.io.atomic import NAME_MAX
from mvcaug.core.errors import UserError
from mvcaug.core.params import PrepareParams, ResizeMode

__all__ = ["IMAGE_SUFFIXES", "OS_JUNK", "DIGIT_NAMES", "SPLITS", "MANIFEST_COLUMNS", "GROUPS_FILE", "GROUP_COLUMN",
    "DatasetError", "SourceImage", "load_digits_source", "is_image_file", "printable", "check_name",
    "check_distinct_classes", "image_id", "check_unique_ids", "split_rank", "stratified_split", "eight_bit",
    "to_working_image", "png_bytes", "working_images", "plan_splits", "model_png", "manifest_table"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
OS_JUNK = {"thumbs.db", "desktop.ini"}
"""Files Windows leaves in picture folders: skipped without a word, like hidden files."""
MAX_ID_BYTES = NAME_MAX - len("real-.png") - 6
"""An image id is a file name (<id>.png, and real-<id>.png in an export), with a little room to spare."""
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "val", "reference", "test")
MANIFEST_COLUMNS = ("id", "path", "label", "split", "source", "sha256", "width", "height")
MODEL_COLUMNS = ("model_path", "model_sha256")
"""With prepare.model_resolution: each training image at the model's resolution ("" for the other splits)."""
RESIZE_COLUMN = "resize"
GROUPS_FILE = "groups.csv"
"""Beside an image folder's class folders: which images belong together (file_name, group), e.g. one writer's or one
patient's; the test images of a group are then resampled together by the bootstrap (mvcaug.judging.bootstrap clusters)."""
GROUP_COLUMN = "group"
"""The manifest's column of groups (only when the image folder has a groups.csv); "" = the image alone."""
"""For an image folder: the prepare.resize that made each image square. (The digits are all 8 x 8 squares,
which every mode treats alike, so their manifest stays as it was.)"""
ALPHA_BACKGROUND = (255, 255, 255)
"""Transparent pixels show white, as on a page: the colour a file keeps under them is hidden, often
arbitrary (black, or left over from an edit), and must not become the image's background."""
PAD_FILL = "black"
"""The borders of prepare.resize: pad (torchvision's Pad default)."""
TINY_PIXELS = 8
TINY_FRACTION = 4
"""A source whose short side is under TINY_PIXELS, or under 1/TINY_FRACTION of the size it is written at,
is warned about: upscaled that far it is a blur, which a person should know before generating from it."""


class DatasetError(UserError, ValueError):
    """The dataset source cannot be used as it is; the message names the file and the fix."""


@dataclass(frozen=True)
class SourceImage:
    """One image of a source, before splitting: listed by id, decoded only when read."""

    id: str
    label: str
    source: str  # where it came from: "digits:<index>" or the path relative to the image folder
    read: Callable[[], Image.Image]
    """Decodes the image (a folder's file is opened then); each call gives a fresh image."""

    @property
    def image(self) -> Image.Image:
        """The decoded image (read once more on every access)."""
        return self.read()


def load_digits_source() -> list[SourceImage]:
    """scikit-learn's 1,797 bundled 8x8 digits as white strokes on black, labels spelled out."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    items = []
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        array = np.clip(pixels * (255.0 / 16.0), 0, 255).astype(np.uint8)
        items.append(SourceImage(f"digits-{index:04d}", DIGIT_NAMES[int(target)], f"digits:{index}",
                                 functools.partial(Image.fromarray, array)))
    return items


def is_image_file(path: Path) -> bool:
    """An image by its suffix, and not hidden (AppleDouble `._x.png`, editor leftovers)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def printable(path: str | Path) -> str:
    """A path as text that any terminal and log file can hold: bytes that are not UTF-8 as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_name(path: Path, root: Path) -> None:
    """The manifest (parquet), captions and logs hold text: a name that is not UTF-8 cannot go in them, and
    one with a control character (a newline, a tab) would split a log line or a one-line error in two."""
    name = str(path.relative_to(root))
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DatasetError(f"{printable(path)}: the name is not valid UTF-8 (the manifest stores names as text); "
                           "rename it, e.g. with `convmv -f latin1 -t utf8 --notest -r <folder>`") from err
    if any(unicodedata.category(char) == "Cc" for char in name):
        shown = "".join(ascii(char)[1:-1] if unicodedata.category(char) == "Cc" else char for char in str(path))
        raise DatasetError(f"{shown}: the name holds a control character (newline, tab, ...), which would break "
                           "log lines and tables; rename it")


def same_name_key(name: str) -> str:
    """A name as a case-insensitive, Unicode-normalising file system (macOS, Windows) compares it: Cat and
    cat, or é as one character (NFC) and as e + accent (NFD, as macOS writes it), are one name there."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def check_distinct_classes(class_dirs: list[Path], root: Path) -> None:
    """Two class folders whose names differ only in case or Unicode form are refused: they look alike in
    every table, and on macOS or Windows their output folders (images/<split>/<class>/) are one folder."""
    seen: dict[str, Path] = {}
    for class_dir in class_dirs:
        other = seen.setdefault(same_name_key(class_dir.name), class_dir)
        if other is not class_dir:
            raise DatasetError(
                f"{printable(root)}: class folders {other.name!r} and {class_dir.name!r} differ only in letter case "
                "or Unicode form (é as one character or as e + accent): one class to a reader, one folder on macOS "
                "and Windows; merge them or rename one")


def image_id(label: str, file: Path) -> str:
    """<class>-<stem>, plus the suffix when it is not .png, so a.png and a.jpg stay distinct; a file in a
    nested folder gets the folders too (<class>-<sub>_<stem>), so files directly in the class keep their id.
    These readable ids can clash (x.png / x.PNG, sub/y.png / sub_y.png, class a's b-c.png / class a-b's
    c.png): `check_unique_ids` refuses that rather than let one file overwrite another."""
    suffix = file.suffix.lower()
    stem = "_".join([*file.parent.parts, file.stem]) if file.parent != Path(".") and file.parent.parts else file.stem
    return f"{label}-{stem}" if suffix == ".png" else f"{label}-{stem}{suffix.replace('.', '_')}"


def check_unique_ids(items: list[SourceImage], root: Path) -> None:
    """Refuse two files that would get one id: one would overwrite the other's PNG (its sha256 in the
    manifest then names other bytes), and generate, which looks conditioning images up by id, could condition
    one class on another's image. Ids that differ only in letter case are refused too: on a case-insensitive
    file system (macOS, Windows) they are one file. (Renaming ids to make them unique would move images
    between splits in every existing dataset; a clash is rare and one rename fixes it.)"""
    seen: dict[str, SourceImage] = {}
    for item in items:
        if len(item.id.encode()) > MAX_ID_BYTES:
            raise DatasetError(
                f"{root}: {item.source} gets an image id of {len(item.id.encode())} bytes (the class, sub-folders "
                f"and name joined), over the {MAX_ID_BYTES} a file name leaves for it; shorten the file or class name")
        other = seen.setdefault(same_name_key(item.id), item)
        if other is not item:
            raise DatasetError(
                f"{root}: {other.source} (class '{other.label}') and {item.source} (class '{item.label}') get "
                f"the same image id '{other.id}' (ids join the class, sub-folders and name with - and _, and "
                "ignore case); rename one of the two files")


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
    need = params.train_per_class + params.val_per_class + params.reference_per_class + max(1, params.test_per_class)
    for label in sorted(set(labels)):
        members = [i for i, item in enumerate(labels) if item == label]
        if len(members) < need:
            raise DatasetError(
                f"class '{label}' has {len(members)} images; the split needs at least {need} "
                "(prepare.train_per_class + val_per_class + reference_per_class + test_per_class, at least 1 "
                "test image): lower them, set test_per_class: 0 (every remaining image) or add images"
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
    range. (PIL's convert would clip all of these to 255, or floats in [0, 1] to black.)

    Float pixels that are NaN or infinite are left out of the range (one NaN would make it NaN and the whole
    image black) and then drawn as NaN and -inf black (0), +inf white (255)."""
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return image
    array = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(array)
    values = array[finite] if image.mode == "F" else array
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and 255 < high <= 65535):
        scaled = array / 257.0
    elif image.mode == "I" and low >= 0 and high <= 255:
        scaled = array
    elif image.mode == "F" and low >= 0 and high <= 1:
        scaled = array * 255.0
    else:
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
    if not finite.all():
        scaled = np.where(finite, scaled, np.where(np.isposinf(array), 255.0, 0.0))
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), "L")


def upright(image: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: a camera's EXIF orientation tag applied (phones store most
    portrait photos sideways with the tag); an image without one is returned as it is, not copied."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) in (1, None):
        return image
    return ImageOps.exif_transpose(image)


def has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def on_background(image: Image.Image) -> Image.Image:
    """An image with transparency composited on ALPHA_BACKGROUND (RGB); any other image as it is."""
    if not has_transparency(image):
        return image
    background = Image.new("RGBA", image.size, (*ALPHA_BACKGROUND, 255))
    return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")


def to_square(image: Image.Image, size: int, resize: ResizeMode) -> Image.Image:
    """The image at size x size (bicubic): a square source is resized as it is, whatever the mode; a
    non-square one is cut to its middle (center_crop), bordered (pad, PAD_FILL) or stretched (squash)."""
    if image.size == (size, size):
        return image
    if image.width == image.height or resize == "squash":
        return image.resize((size, size), Image.Resampling.BICUBIC)
    if resize == "pad":
        long = max(image.size)
        if round(min(image.size) * size / long) == 0:  # a sliver that PIL scales to 0 px: all border, no image
            floor = math.ceil(long / size)
            image = image.resize((max(image.width, floor), max(image.height, floor)), Image.Resampling.BICUBIC)
        return ImageOps.pad(image, (size, size), Image.Resampling.BICUBIC, color=PAD_FILL)
    return ImageOps.fit(image, (size, size), Image.Resampling.BICUBIC)


def to_working_image(image: Image.Image, resolution: int, channels: int,
                     resize: ResizeMode = "center_crop") -> Image.Image:
    """Convert to the working mode and size, so every later stage sees one format: upright, 8 bits,
    transparency on white, then square by `resize`."""
    mode = "L" if channels == 1 else "RGB"
    converted = on_background(eight_bit(upright(image))).convert(mode)
    return to_square(converted, resolution, resize)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class WorkingImage:
    """A source image once converted: its working PNG was handed to the writer; only its hash stays."""

    item: SourceImage
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class PlannedImage:
    """A working image with its split and where it goes under the output folder."""

    image: WorkingImage
    split: str
    path: str
    model_path: str  # "" unless prepare.model_resolution and the image is in train


def tiny_limit(params: PrepareParams) -> float:
    """The short side under which a source is warned about (see TINY_PIXELS)."""
    return max(TINY_PIXELS, max(params.resolution, params.model_resolution) / TINY_FRACTION)


def _warn_small(small: list[tuple[SourceImage, tuple[int, int]]], params: PrepareParams) -> None:
    if not small:
        return
    size = max(params.resolution, params.model_resolution)
    examples = ", ".join(f"{item.source} ({w}x{h})" for item, (w, h) in small[:5])
    log.warning("%d source image(s) are under %g px on their short side, e.g. %s: upscaled to %d px they will be "
                "blurred; use larger images or a lower prepare.resolution", len(small), tiny_limit(params), examples,
                size)


def _non_finite(image: Image.Image) -> int:
    return int(np.count_nonzero(~np.isfinite(np.asarray(image)))) if image.mode == "F" else 0


def _how_same(item: SourceImage, other: SourceImage, params: PrepareParams) -> str:
    """'' when the two sources have the same pixels; else what made two different files one working image
    (read again: this runs only on the way to an error)."""
    one, two = upright(item.read()), upright(other.read())
    if one.mode == two.mode and one.size == two.size and one.tobytes() == two.tobytes():
        return ""
    return (f" once prepared (the files differ, but at prepare.resolution {params.resolution} px, "
            f"{params.channels} channel(s), prepare.resize {params.resize}, their pixels are equal)")


def working_images(items: list[SourceImage], params: PrepareParams,
                   write: Callable[[SourceImage, bytes], object]) -> list[WorkingImage]:
    """Convert the items one at a time, hand each new content's working PNG to `write` as it comes and keep
    only its hash, so memory does not grow with the number of images. The same content under two labels is a
    label conflict (an error naming both), twice in one class a copy (the first kept, a warning)."""
    first: dict[str, WorkingImage] = {}
    kept: list[WorkingImage] = []
    copies: dict[str, list[str]] = defaultdict(list)
    small: list[tuple[SourceImage, tuple[int, int]]] = []
    for item in tqdm(items, desc="prepare", unit="img"):
        source = upright(item.read())
        if bad := _non_finite(source):
            log.warning("%s: %d NaN or infinite pixel(s), drawn black (+inf white) and left out of the "
                        "8-bit scaling", item.source, bad)
        image = to_working_image(source, params.resolution, params.channels, params.resize)
        if min(source.size) < tiny_limit(params):
            small.append((item, source.size))
        del source
        data = png_bytes(image)
        digest = hashlib.sha256(data).hexdigest()
        if digest in first:
            other = first[digest].item
            if other.label != item.label:
                raise DatasetError(
                    f"{item.source} (class '{item.label}') is the same image as {other.source} (class "
                    f"'{other.label}'){_how_same(item, other, params)}: one image cannot have two labels; delete "
                    "or move one of them")
            copies[other.source].append(item.source)
            continue
        write(item, data)
        first[digest] = WorkingImage(item, digest, *image.size)
        kept.append(first[digest])
    for original, same in copies.items():
        log.warning("%s appears %d more time(s) in its class (%s): kept once, so no copy lands in another split",
                    original, len(same), ", ".join(same))
    _warn_small(small, params)
    return kept


def plan_splits(kept: list[WorkingImage], params: PrepareParams) -> list[PlannedImage]:
    """The split of each kept image and its paths; images the split leaves out (test_per_class) are dropped."""
    splits = stratified_split([k.item.id for k in kept], [k.item.label for k in kept], params)
    planned = []
    for image, split in zip(kept, splits):
        if not split:
            continue
        label, image_id = image.item.label, image.item.id
        model_path = (f"images_model/train/{label}/{image_id}.png"
                      if params.model_resolution and split == "train" else "")
        planned.append(PlannedImage(image, split, f"images/{split}/{label}/{image_id}.png", model_path))
    return planned


def model_png(item: SourceImage, params: PrepareParams) -> bytes:
    """A training image at the model's resolution, resized once from the source (not from the working image)."""
    return png_bytes(to_working_image(item.read(), params.model_resolution, params.channels, params.resize))


def manifest_table(planned: list[PlannedImage], params: PrepareParams, model_sha256: Mapping[str, str],
                   groups: Mapping[str, str] | None = None) -> pa.Table:
    """One row per planned image (MANIFEST_COLUMNS; MODEL_COLUMNS with a model resolution, the model copy's
    hash from `model_sha256` by id; RESIZE_COLUMN for an image folder; GROUP_COLUMN when `groups` maps
    source paths to groups)."""
    rows: dict[str, list] = defaultdict(list)
    for row in planned:
        item = row.image.item
        values = [("id", item.id), ("path", row.path), ("label", item.label), ("split", row.split),
                  ("source", item.source), ("sha256", row.image.sha256), ("width", row.image.width),
                  ("height", row.image.height)]
        if params.model_resolution:
            values += [("model_path", row.model_path), ("model_sha256", model_sha256.get(item.id, ""))]
        if params.source == "imagefolder":
            values.append((RESIZE_COLUMN, params.resize))
        if groups is not None:
            values.append((GROUP_COLUMN, groups.get(item.source, "")))
        for key, value in values:
            rows[key].append(value)
    columns = (MANIFEST_COLUMNS + (MODEL_COLUMNS if params.model_resolution else ())
               + ((RESIZE_COLUMN,) if params.source == "imagefolder" else ())
               + ((GROUP_COLUMN,) if groups is not None else ()))
    return pa.table({key: rows[key] for key in columns})
