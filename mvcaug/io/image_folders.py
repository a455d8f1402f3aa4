"""A user's image folders read from disk: the task's (prepare.image_folder, one subfolder per class), a
retrieval folder of the same shape (train.retrieval_folder) and an unlabeled pretraining folder (pretrain.folder).

Walking a folder and decoding its files is here; the rules a listing must pass (names, ids, classes: which
refuse a folder with the file named) are mvcaug.data.prepare's, which this module applies as it lists. A folder
is listed first (ids, labels, no pixels); each image is decoded later, one at a time, by `SourceImage.read`.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mvcaug.core.params import PrepareParams
from mvcaug.data.prepare import (
    GROUPS_FILE, IMAGE_SUFFIXES, OS_JUNK, DatasetError, SourceImage, check_distinct_classes, check_name,
    check_unique_ids, image_id, is_image_file, load_digits_source, printable,
)

__all__ = ["class_folders", "load_imagefolder_source", "open_image", "read_folder_image", "load_source",
    "folder_files", "read_groups"]

log = logging.getLogger(__name__)


def _unreadable(err: OSError) -> DatasetError:
    where = printable(err.filename) if err.filename else "a folder"
    return DatasetError(f"{where}: cannot be read ({err.strerror or err}); give the user running prepare read "
                        "access to it (chmod -R u+rX) or move it out of the image folder")


def _raise_unreadable(err: OSError) -> None:
    raise _unreadable(err) from err


def _check_link(path: Path) -> None:
    """A symlink to nothing (an unmounted drive, a moved folder) would drop its images or its whole class
    without a word: refused, naming the link and where it points."""
    if path.is_symlink() and not path.exists():
        raise DatasetError(f"{printable(path)}: a symlink to {printable(os.readlink(path))}, which does not exist; "
                           "mount or restore its target, or remove the link")


def class_images(class_dir: Path) -> tuple[list[Path], list[Path]]:
    """The images of a class folder, in its nested subfolders too (as torchvision's ImageFolder reads
    them), hidden files and folders left out, in sorted order; and what is not read (files without an image
    suffix, symlinked subfolders, which are not followed, as before), for `_warn_not_read`. A subfolder
    that cannot be read, or a dangling symlink, stops with its path named (it is not silently empty)."""
    files: list[Path] = []
    not_read: list[Path] = []
    for folder, subfolders, names in os.walk(class_dir, onerror=_raise_unreadable):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        not_read += [Path(folder, name) for name in subfolders if Path(folder, name).is_symlink()]
        for name in names:
            path = Path(folder, name)
            if name.startswith(".") or name.lower() in OS_JUNK:
                continue
            _check_link(path)
            (files if is_image_file(path) and path.is_file() else not_read).append(path)
    return sorted(files), sorted(not_read)


def _warn_not_read(not_read: list[Path], root: Path) -> None:
    """Files a person may have meant as data (iPhone .heic, an image beside the class folders, a linked
    subfolder) are left out: say so, so the dataset is never silently smaller than the folder."""
    if not_read:
        examples = ", ".join(printable(path.relative_to(root)) for path in sorted(not_read)[:5])
        log.warning("%s: %d file(s) or linked folder(s) are not read, e.g. %s: only files with suffix %s inside a "
                    "class folder are images, and symlinked folders inside a class are not followed; convert or "
                    "move them if they belong to the dataset", printable(root), len(not_read), examples,
                    " ".join(sorted(IMAGE_SUFFIXES)))


def class_folders(folder: str | Path) -> list[Path]:
    """The class subfolders of an image folder (hidden ones left out), in sorted order."""
    root = Path(folder)
    if not str(folder) or not root.exists():
        tilde = " (a leading ~ is not expanded: write the full path)" if str(folder).startswith("~") else ""
        raise DatasetError(f"image folder '{folder}' does not exist{tilde}; set prepare.image_folder to a folder of "
                           "class subfolders")
    if not root.is_dir():
        raise DatasetError(f"image folder '{printable(root)}' is a file, not a folder; set prepare.image_folder "
                           "to a folder that holds one subfolder per class")
    try:
        entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    except OSError as err:
        raise _unreadable(err) from err
    for entry in entries:
        _check_link(entry)
    return sorted(p for p in entries if p.is_dir())


def stray_images(root: Path) -> list[Path]:
    """Images directly in the image folder: they belong to no class, so they are not read (and said so)."""
    return sorted(p for p in root.iterdir() if is_image_file(p) and p.is_file())


def load_imagefolder_source(folder: str | Path) -> list[SourceImage]:
    """Every image under folder/<class>/, listed (decoded later, one at a time, by `SourceImage.read`);
    missing, unreadable or empty folders, dangling symlinks, names that are not UTF-8 or hold a control
    character, class names alike but for case and clashing or too long ids stop with the path named; files
    that are not read are warned about."""
    root = Path(folder)
    class_dirs = class_folders(folder)
    if not class_dirs:
        raise DatasetError(f"{root}: no class subfolders; put each class's images in {root}/<class>/")
    for class_dir in class_dirs:
        check_name(class_dir, root)
    check_distinct_classes(class_dirs, root)
    items, not_read = [], stray_images(root)
    for class_dir in class_dirs:
        files, skipped = class_images(class_dir)
        not_read += skipped
        if not files:
            raise DatasetError(
                f"{class_dir}: empty class folder (no images with suffix {sorted(IMAGE_SUFFIXES)}); "
                "add images or remove the folder"
            )
        for file in files:
            check_name(file, root)
            items.append(SourceImage(image_id(class_dir.name, file.relative_to(class_dir)), class_dir.name,
                                     file.relative_to(root).as_posix(), functools.partial(read_folder_image, file)))
    check_unique_ids(items, root)
    _warn_not_read(not_read, root)
    return items


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


def read_folder_image(path: Path) -> Image.Image:
    """A folder's image decoded; one with no finite pixel at all (every pixel NaN or infinite) is refused:
    there is nothing to scale, and every such file would be the same black square."""
    image = open_image(path)
    if image.mode == "F" and not np.isfinite(np.asarray(image)).any():
        raise DatasetError(f"{path}: every pixel is NaN or infinite (no image data); replace or delete the file")
    try:  # parsed now, so that `upright` finds it parsed (PIL keeps what it read, empty after a failure)
        image.getexif()
    except Exception as err:  # whatever PIL raises on a file's garbled metadata: the file's problem, not a bug
        log.warning("%s: its EXIF metadata cannot be read (%s: %s); the pixels are read without it (no EXIF "
                    "orientation applied)", printable(path), type(err).__name__, err)
    return image


def _warn_folder_not_read(image_folder: str) -> None:
    """prepare.source: digits ignores prepare.image_folder: a user who set their folder (or filled the default
    one with class folders) and left the source at digits would otherwise get the digits without a word."""
    default = PrepareParams.image_folder
    try:
        has_classes = any(p.is_dir() and not p.name.startswith(".") for p in Path(image_folder).iterdir())
    except OSError:
        has_classes = False
    if image_folder != default or has_classes:
        log.warning("prepare.source is digits, so prepare.image_folder (%s) is not read; set prepare.source: "
                    "imagefolder to prepare your images", image_folder)


def load_source(params: PrepareParams) -> list[SourceImage]:
    """Dispatch on prepare.source; a source with fewer than two classes is refused."""
    if params.source == "digits":
        _warn_folder_not_read(params.image_folder)
        items = load_digits_source()
    elif params.source == "imagefolder":
        items = load_imagefolder_source(params.image_folder)
    else:
        raise DatasetError(f"unknown dataset source '{params.source}'; set prepare.source to digits or imagefolder")
    classes = sorted({item.label for item in items})
    if len(classes) < 2:
        raise DatasetError(f"{params.image_folder if params.source == 'imagefolder' else params.source}: one class "
                           f"only ({', '.join(classes) or 'none'}); a classifier needs at least two class folders")
    return items


def folder_files(folder: str | Path) -> list[Path]:
    """The image files anywhere under `folder`, in path order (hidden files and other suffixes left out)."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder for pretrain.source: folder; put your unlabeled images there or "
                           "set pretrain.folder to the folder that holds them")
    files = sorted((path for path in root.rglob("*") if path.is_file() and is_image_file(path)),
                   key=lambda path: path.relative_to(root).as_posix())
    if not files:
        raise DatasetError(f"{root}: no images for pretrain.source: folder (it is searched with its sub-folders); add "
                           "your unlabeled images, or set pretrain.source: none")
    return files


def read_groups(folder: str | Path, items: list[SourceImage]) -> dict[str, str] | None:
    """{source path: group} from the image folder's groups.csv (columns file_name, group; file_name as the
    image's path under the folder, e.g. cat/img01.png), or None without one. A row naming no image of the
    folder, or a file named twice, is a DatasetError naming the line; an image without a row is a group alone."""
    path = Path(folder) / GROUPS_FILE
    if not path.is_file():
        return None
    known = {item.source for item in items}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"file_name", "group"} <= set(reader.fieldnames):
                raise DatasetError(f"{path}: needs the columns file_name and group (the header row), got "
                                   f"{reader.fieldnames}")
            groups: dict[str, str] = {}
            for row in reader:
                name, group = (row.get("file_name") or "").strip(), (row.get("group") or "").strip()
                if name not in known:
                    raise DatasetError(f"{path}:{reader.line_num}: '{name}' is no image of {folder} (file_name is the "
                                       "path under the image folder, e.g. cat/img01.png); fix or remove the row")
                if name in groups:
                    raise DatasetError(f"{path}:{reader.line_num}: '{name}' is named twice; keep one row per image")
                groups[name] = group
    except (UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{path}: not a UTF-8 CSV file ({err}); save it as UTF-8 CSV with a header row") from err
    return groups
