"""Images <-> tensors in [-1, 1], image sets in memory, and which images of two sets are the same picture
(files are read in mvcaug.io.images)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from PIL import Image

from mvcaug.core.errors import MissingInputError, UserError

if TYPE_CHECKING:
    import torch

__all__ = ["ImageSet", "corpus_images", "to_tensor", "to_image", "resize", "pixel_digests", "shared_images",
    "TaskImageError", "refuse_task_images"]


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
        import torch

        return ImageSet(self.ids + other.ids, self.labels + other.labels, self.sha256 + other.sha256,
                        torch.cat([self.pixels, other.pixels]))


def corpus_images(table: pa.Table, channels: int, resolution: int) -> ImageSet:
    """The images of a corpus table (label = the glyph's words, pixels = uint8 bytes, channels x resolution^2),
    with each image's sha256 taken over its pixel bytes."""
    import torch

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
    import torch

    mode = "L" if channels == 1 else "RGB"
    array = np.asarray(image.convert(mode), dtype=np.float32) / 127.5 - 1.0
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def to_image(tensor: torch.Tensor, size: int | None = None) -> Image.Image:
    """A (C, H, W) tensor in [-1, 1] as a PIL image, resized (bicubic) to `size` when given."""
    import torch

    array = ((tensor.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    image = Image.fromarray(array[0]) if array.shape[0] == 1 else Image.fromarray(array.transpose(1, 2, 0))
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image


def resize(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """(n, C, H, W) to (n, C, size, size), bicubic with antialiasing; a no-op at that size already."""
    import torch

    if pixels.shape[-1] == size and pixels.shape[-2] == size:
        return pixels
    return torch.nn.functional.interpolate(pixels, size=(size, size), mode="bicubic", antialias=True).clamp(-1, 1)


def pixel_digests(pixels: torch.Tensor) -> list[str]:
    """sha256 of each image's 8-bit pixels (channels x height x width): equal for equal images whichever file,
    format or folder they were read from."""
    import torch

    eight_bit = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return [hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in eight_bit]


def shared_images(outside: ImageSet, task: ImageSet) -> list[tuple[str, str]]:
    """(outside id, task id) for every image of `outside` whose pixels equal an image of the task's."""
    if not outside.ids or not task.ids or outside.pixels.shape[1:] != task.pixels.shape[1:]:
        return []
    by_digest = dict(zip(pixel_digests(task.pixels), task.ids))
    return [(ident, by_digest[digest]) for ident, digest in zip(outside.ids, pixel_digests(outside.pixels))
            if digest in by_digest]


class TaskImageError(UserError, ValueError):
    """Extra data (a pretraining corpus, retrieved images) holds an image of the task's splits."""


def refuse_task_images(outside: ImageSet, splits: Mapping[str, ImageSet], where: str, what: str, fix: str,
                       sources: Mapping[str, str] | None = None) -> None:
    """Refuse `outside` when one of its images equals an image of one of the task's `splits` ({split: images}, looked
    at in that order): a TaskImageError naming `where`, how many of its `what`s equal images of the first such
    split, one pair (the outside image with its source from `sources` when known) and `fix`."""
    for split, images in splits.items():
        shared = shared_images(outside, images)
        if shared:
            ident, inside = shared[0]
            shown = f"{ident} ({sources[ident]})" if sources and ident in sources else ident
            raise TaskImageError(f"{where}: {len(shared)} {what}(s) equal images of the task's {split} split, e.g. "
                                 f"{shown} = {inside}; {fix}")
