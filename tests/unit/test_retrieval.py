"""train.retrieval_folder: the corpus cells' real images for a user's own profile, and the rule that no image
added from outside the task (retrieved, or pretraining corpus) equals one of the task's."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from mvcaug.judging.cells import CORPUS, Cell
from mvcaug.core.params import Params, PathsParams, PretrainParams, TrainParams
from mvcaug.data.retrieval import RetrievalError, has_classes, retrieval_images
from mvcaug.data.images import pixel_digests, shared_images
from mvcaug.judging.train import corpus_counts
from tasks.train import load_training_data, plan_grid

CLASSES = ["eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"]


def retrieval_params(folder, retrieval, pretrain_source="none") -> Params:
    return Params(paths=PathsParams(prepared=str(folder)), pretrain=PretrainParams(source=pretrain_source),
                  train=TrainParams(retrieval_folder=str(retrieval)))


def test_a_folder_with_only_its_readme_has_no_classes(tmp_path):
    (tmp_path / "README.md").write_text("# here")
    assert not has_classes(tmp_path) and not has_classes(tmp_path / "missing")
    (tmp_path / "cat").mkdir()
    assert has_classes(tmp_path)


def test_retrieved_images_come_per_class_in_a_seeded_order_converted_as_prepare_converts(make_imagefolder, tmp_path):
    folder = make_imagefolder(tmp_path / "retrieved", {"cat": 5, "dog": 4, "owl": 2}, size=(20, 30))
    images = retrieval_images(folder, ["cat", "dog"], 3, 16, 3, "center_crop", seed=0)
    assert images.labels == ["cat"] * 3 + ["dog"] * 3  # the owl is no class of the task
    assert images.pixels.shape == (6, 3, 16, 16) and images.pixels.min() >= -1 and images.pixels.max() <= 1
    assert images.sha256 == pixel_digests(images.pixels)
    again = retrieval_images(folder, ["cat", "dog"], 3, 16, 3, "center_crop", seed=0)
    assert again.ids == images.ids
    other = [retrieval_images(folder, ["cat"], 3, 16, 3, "center_crop", seed=s).ids for s in range(1, 6)]
    assert any(ids != images.ids[:3] for ids in other)  # the order follows the seed, not the file names


def test_a_missing_class_or_too_few_images_is_one_line_naming_the_folder(make_imagefolder, tmp_path):
    folder = make_imagefolder(tmp_path / "retrieved", {"cat": 5, "dog": 2})
    with pytest.raises(RetrievalError, match=r"no folder for class\(es\) emu of the task") as info:
        retrieval_images(folder, ["cat", "emu"], 2, 16, 1, "center_crop", 0)
    assert str(info.value).startswith(str(folder)) and "\n" not in str(info.value)
    with pytest.raises(RetrievalError, match=r"dog: 2 image\(s\), but the corpus cells add up to 3"):
        retrieval_images(folder, ["cat", "dog"], 3, 16, 1, "center_crop", 0)


def test_corpus_cells_come_from_a_retrieval_folder_even_without_pretraining(make_imagefolder, tmp_path):
    def counts(params: Params) -> list[int]:
        return corpus_counts(params, has_classes(params.train.retrieval_folder))

    empty = tmp_path / "empty"
    empty.mkdir()
    assert counts(retrieval_params(tmp_path, empty)) == []
    assert counts(retrieval_params(tmp_path, empty, "folder")) == []  # unlabeled: no class to add
    assert counts(retrieval_params(tmp_path, empty, "glyphs")) == [5, 10, 20]
    folder = make_imagefolder(tmp_path / "retrieved", {"cat": 2})
    assert counts(retrieval_params(tmp_path, folder)) == [5, 10, 20]
    # the stage's plan looks at the folder itself
    assert not any(cell.strategy == CORPUS for cell in plan_grid(retrieval_params(tmp_path, empty)))
    assert sorted({cell.added_per_class for cell in plan_grid(retrieval_params(tmp_path, folder))
                   if cell.strategy == CORPUS}) == [5, 10, 20]


def test_corpus_cells_train_on_the_retrieved_images_and_refuse_a_task_image_among_them(
        digits_prepared, make_imagefolder, tmp_path):
    prepared, manifest = digits_prepared
    retrieval = make_imagefolder(tmp_path / "retrieved", {label: 3 for label in CLASSES}, size=(16, 16), mode="L")
    params = retrieval_params(prepared, retrieval)
    cells = [Cell("small_cnn", "default", CORPUS, 0, added_per_class=2)]
    data, digests = load_training_data.fn(params, cells)
    assert data.corpus is not None and len(data.corpus.ids) == 20 and set(data.corpus.labels) == set(CLASSES)
    assert all(ident.startswith("retrieval-") for ident in data.corpus.ids) and CORPUS in digests
    # one of the task's test images copied into the retrieval folder: refused, naming both
    test_row = next(row for row in manifest.to_pylist() if row["split"] == "test" and row["label"] == "zero")
    for path in (retrieval / "zero").iterdir():
        path.unlink()
    for k in range(3):
        shutil.copy(prepared / test_row["path"], retrieval / "zero" / f"copy{k}.png")
    with pytest.raises(Exception, match=rf"{retrieval}: 2 image\(s\) equal images of the task's test split, e.g. "
                                        rf"retrieval-zero-copy\d = {test_row['id']}"):
        load_training_data.fn(params, cells)


def test_shared_images_are_found_by_their_pixels(digits_prepared):
    from mvcaug.io.images import load_split

    prepared, _ = digits_prepared
    test = load_split(prepared, "test", 1)
    train = load_split(prepared, "train", 1)
    assert shared_images(train, test) == []
    mixed = dataclasses.replace(train.subset([0, 1]).concat(test.subset([3])), ids=["a", "b", "c"])
    assert shared_images(mixed, test) == [("c", test.ids[3])]
