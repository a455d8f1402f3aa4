"""Real images retrieved for the task's classes (train.retrieval_folder): the yardstick a user's own profile
sets beside the synthetic set, as the pretraining corpus is on the digits default.

Published comparisons found retrieved real images as good as diffusion-generated ones, so a user must see
whether the generator adds anything beyond images they could have fetched. The folder has one subfolder per
class, as prepare's image folders do; its images are converted exactly as prepare converts the task's, and the
corpus cells add the first k of each class in a seeded order (not file-name order, which often follows the
retrieval's ranking or date). None of them may equal an image of the task: the test split would then be in the
training data.
"""

from __future__ import annotations

from pathlib import Path

from mvcaug.core.errors import UserError
from mvcaug.data.images import ImageSet, pixel_digests, to_tensor
from mvcaug.core.params import ResizeMode
from mvcaug.data.prepare import DatasetError, split_rank, to_working_image
from mvcaug.io.image_folders import class_folders, load_imagefolder_source

__all__ = ["RetrievalError", "has_classes", "retrieval_images"]


class RetrievalError(UserError, ValueError):
    """The retrieval folder cannot serve the corpus cells as it is; the message names the folder and the fix."""


def has_classes(folder: str | Path) -> bool:
    """Whether the folder holds class subfolders (the default folder holds only its README: corpus cells then
    come from the pretraining corpus, or are off)."""
    try:
        return bool(class_folders(folder))
    except DatasetError:
        return False


def retrieval_images(folder: str | Path, classes: list[str], per_class: int, resolution: int, channels: int,
                     resize: ResizeMode, seed: int) -> ImageSet:
    """`per_class` images of each of the task's classes from folder/<class>/, converted to the working format,
    in a seeded order per class; a class the folder lacks, or holds too few images of, is an error naming it."""
    import torch

    try:
        items = load_imagefolder_source(folder)
    except DatasetError as err:
        raise RetrievalError(f"train.retrieval_folder: {err}") from err
    found = {item.label for item in items}
    missing = sorted(set(classes) - found)
    if missing:
        raise RetrievalError(f"{folder}: no folder for class(es) {', '.join(missing)} of the task; add "
                             f"{folder}/<class>/ for each, or point train.retrieval_folder at a folder without class "
                             "folders to switch the retrieval cells off")
    chosen = []
    for label in classes:
        mine = sorted((item for item in items if item.label == label), key=lambda item: split_rank(item.id, seed))
        if len(mine) < per_class:
            raise RetrievalError(f"{folder}/{label}: {len(mine)} image(s), but the corpus cells add up to {per_class} "
                                 "per class (train.synthetic_budgets x generate.images_per_class); add images or "
                                 "lower the budget")
        chosen += mine[:per_class]
    tensors = [to_tensor(to_working_image(item.image, resolution, channels, resize), channels) for item in chosen]
    pixels = torch.stack(tensors) if tensors else torch.zeros(0, channels, resolution, resolution)
    return ImageSet([f"retrieval-{item.id}" for item in chosen], [item.label for item in chosen],
                    pixel_digests(pixels), pixels)
