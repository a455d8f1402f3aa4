"""Image files in and out of memory: a prepared dataset's manifest and its splits, the PNGs a manifest's rows
name (a synthetic set's too), one image fully decoded.

`load_splits` is the one reader of a prepared dataset's splits: every stage that trains or scores on them (filter,
train, quality, finetune, generate) reads them through it, so each gets the same images, in manifest order, as the
same float32 tensors (mvcaug.data.images.to_tensor).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from mvcaug.core.errors import MissingInputError
from mvcaug.data.images import ImageSet, to_tensor
from mvcaug.io.catalog import FILES

__all__ = ["read_manifest", "read_image", "load_images", "has_model_copies", "load_splits", "load_split"]

MODEL_PATH, MODEL_SHA256 = "model_path", "model_sha256"
"""The manifest's columns of the training images' copies at the model's resolution (mvcaug.data.prepare's
MODEL_COLUMNS, not imported: every stage that reads images would then rerun on any change to prepare.py)."""


def read_manifest(prepared_dir: str | Path) -> pa.Table:
    """The prepared dataset's manifest (one row per image: id, path, label, split, sha256, ...)."""
    path = Path(prepared_dir) / FILES.manifest
    if not path.is_file():
        raise MissingInputError(f"{path}: no dataset manifest; run the prepare stage first", stage="prepare")
    return pq.read_table(path)


def read_image(path: str | Path) -> Image.Image:
    """An image fully decoded into memory, its file closed (a set of thousands stays under the open-file limit)."""
    with Image.open(path) as image:
        image.load()
        return image.copy()


def load_images(folder: str | Path, rows: list[dict], channels: int, id_key: str = "id") -> ImageSet:
    """The images of manifest rows (path relative to folder, label, optional sha256), in row order."""
    import torch

    tensors = []
    for row in rows:
        with Image.open(Path(folder) / row["path"]) as image:
            tensors.append(to_tensor(image, channels))
    pixels = torch.stack(tensors) if tensors else torch.zeros(0, channels, 1, 1)
    return ImageSet([r[id_key] for r in rows], [r["label"] for r in rows], [r.get("sha256", "") for r in rows], pixels)


def has_model_copies(prepared_dir: str | Path) -> bool:
    """Whether prepare wrote copies of the training images at the generative model's resolution
    (prepare.model_resolution): load_splits' model_resolution then reads those instead of the working images."""
    return MODEL_PATH in read_manifest(prepared_dir).column_names


def load_splits(prepared_dir: str | Path, splits: Iterable[str] | None, channels: int,
                model_resolution: bool = False) -> dict[str, ImageSet]:
    """{split: every image of it, in manifest order} for each of `splits` (None: every split the manifest holds,
    in sorted order), the manifest read once; a split it lacks is empty. With model_resolution, the copies
    prepare wrote at the generative model's resolution when it wrote them (prepare.model_resolution), else the
    working images."""
    manifest = read_manifest(prepared_dir)
    names = sorted(set(manifest.column("split").to_pylist())) if splits is None else list(splits)
    model_copies = model_resolution and MODEL_PATH in manifest.column_names
    loaded = {}
    for name in names:
        rows = manifest.filter(pc.equal(manifest["split"], name)).to_pylist()
        if model_copies:
            rows = [{**row, "path": row[MODEL_PATH], "sha256": row[MODEL_SHA256]} for row in rows]
        loaded[name] = load_images(prepared_dir, rows, channels)
    return loaded


def load_split(prepared_dir: str | Path, split: str, channels: int, model_resolution: bool = False) -> ImageSet:
    """One split (load_splits)."""
    return load_splits(prepared_dir, [split], channels, model_resolution)[split]
