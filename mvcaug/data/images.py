"""Images <-> tensors in [-1, 1], and reading a manifest's split into memory."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from PIL import Image

from mvcaug.core.errors import MissingInputError


@dataclass
class ImageSet:
    """A split in memory: ids, labels, content hashes and an (n, C, H, W) tensor in [-1, 1]."""

    ids: list[str]
    labels: list[str]
    sha256: list[str]
    pixels: torch.Tensor

    def of_class(self, label: str) -> np.ndarray:
        return np.array([i for i, item in enumerate(self.labels) if item == label], dtype=np.int64)

    def subset(self, indices: list[int] | np.ndarray) -> ImageSet:
        """The images at `indices`, in that order."""
        indices = [int(i) for i in indices]
        return ImageSet([self.ids[i] for i in indices], [self.labels[i] for i in indices],
                        [self.sha256[i] for i in indices], self.pixels[indices])

    def first_per_class(self, count: int) -> ImageSet:
        """The first `count` images of every class, in set order (all of a class with fewer)."""
        seen: dict[str, int] = {}
        keep = []
        for i, label in enumerate(self.labels):
            if seen.get(label, 0) < count:
                seen[label] = seen.get(label, 0) + 1
                keep.append(i)
        return self.subset(keep)

    def concat(self, other: ImageSet) -> ImageSet:
        """This set followed by `other`."""
        return ImageSet(self.ids + other.ids, self.labels + other.labels, self.sha256 + other.sha256,
                        torch.cat([self.pixels, other.pixels]))


def corpus_images(table: pa.Table, channels: int, resolution: int) -> ImageSet:
    """The images of a corpus table (label = the glyph's words, pixels = uint8 bytes, channels x resolution^2),
    with each image's sha256 taken over its pixel bytes."""
    blobs = table.column("pixels").to_pylist()
    shape = (channels, resolution, resolution)
    if any(len(blob) != channels * resolution * resolution for blob in blobs):
        raise MissingInputError(f"the pretraining corpus holds images of another size than {channels} x {resolution} "
                                f"x {resolution} (prepare.channels, prepare.resolution); rerun the pretrain stage")
    array = np.stack([np.frombuffer(blob, np.uint8).reshape(shape) for blob in blobs]) if blobs else np.zeros((0, *shape), np.uint8)
    pixels = torch.from_numpy(array.astype(np.float32) / 127.5 - 1.0)
    return ImageSet(table.column("id").to_pylist(), table.column("word").to_pylist(),
                    [hashlib.sha256(blob).hexdigest() for blob in blobs], pixels)


def to_tensor(image: Image.Image, channels: int) -> torch.Tensor:
    """(C, H, W) float in [-1, 1]."""
    mode = "L" if channels == 1 else "RGB"
    array = np.asarray(image.convert(mode), dtype=np.float32) / 127.5 - 1.0
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def to_image(tensor: torch.Tensor, size: int | None = None) -> Image.Image:
    """A (C, H, W) tensor in [-1, 1] as a PIL image, resized (bicubic) to `size` when given."""
    array = ((tensor.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    image = Image.fromarray(array[0]) if array.shape[0] == 1 else Image.fromarray(array.transpose(1, 2, 0))
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image


def resize(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """(n, C, H, W) to (n, C, size, size), bicubic with antialiasing; a no-op at that size already."""
    if pixels.shape[-1] == size and pixels.shape[-2] == size:
        return pixels
    return torch.nn.functional.interpolate(pixels, size=(size, size), mode="bicubic", antialias=True).clamp(-1, 1)


def read_manifest(prepared_dir: str | Path) -> pa.Table:
    path = Path(prepared_dir) / "manifest.parquet"
    if not path.is_file():
        raise MissingInputError(f"{path}: no dataset manifest; run the prepare stage first (dvc repro prepare)")
    return pq.read_table(path)


def read_image(path: str | Path) -> Image.Image:
    """An image fully decoded into memory, its file closed (a set of thousands stays under the open-file limit)."""
    with Image.open(path) as image:
        image.load()
        return image.copy()


def load_images(folder: str | Path, rows: list[dict], channels: int, id_key: str = "id") -> ImageSet:
    """The images of manifest rows (path relative to folder, label, optional sha256), in row order."""
    tensors = []
    for row in rows:
        with Image.open(Path(folder) / row["path"]) as image:
            tensors.append(to_tensor(image, channels))
    pixels = torch.stack(tensors) if tensors else torch.zeros(0, channels, 1, 1)
    return ImageSet([r[id_key] for r in rows], [r["label"] for r in rows], [r.get("sha256", "") for r in rows], pixels)


def load_split(prepared_dir: str | Path, split: str, channels: int, model_resolution: bool = False) -> ImageSet:
    """Every image of one split, in manifest order; with model_resolution, the copies prepare wrote at the
    generative model's resolution when it wrote them (prepare.model_resolution), else the working images."""
    manifest = read_manifest(prepared_dir)
    rows = manifest.filter(pc.equal(manifest["split"], split)).to_pylist()
    if model_resolution and "model_path" in manifest.column_names:
        rows = [{**row, "path": row["model_path"], "sha256": row["model_sha256"]} for row in rows]
    return load_images(prepared_dir, rows, channels)
