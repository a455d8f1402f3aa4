"""prepare: sources, the stratified split, written images and the manifest; errors name the file."""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mvcaug.core.params import PrepareParams
from tasks.prepare import prepare_dataset
from mvcaug.data.prepare import DIGIT_NAMES, MANIFEST_COLUMNS, DatasetError, eight_bit, stratified_split
from mvcaug.io.image_folders import load_imagefolder_source

SMALL = dict(train_per_class=5, val_per_class=3, test_per_class=2)
ROOT = Path(__file__).resolve().parents[2]


def split_counts(manifest) -> collections.Counter:
    return collections.Counter(zip(manifest["label"].to_pylist(), manifest["split"].to_pylist()))


def ids_by_split(manifest) -> dict[str, set[str]]:
    out: dict[str, set[str]] = collections.defaultdict(set)
    for row in manifest.to_pylist():
        out[row["split"]].add(row["id"])
    return dict(out)


@pytest.fixture(scope="module")
def digits_small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prep")
    params = PrepareParams(source="digits", resolution=12, channels=1, seed=0, **SMALL)
    return folder, params, prepare_dataset(params, folder)


def test_digits_manifest_columns_and_exact_stratified_counts(digits_small):
    folder, params, manifest = digits_small
    assert tuple(manifest.column_names) == MANIFEST_COLUMNS
    counts = split_counts(manifest)
    expected = {(label, split): n for label in DIGIT_NAMES
                for split, n in (("train", 5), ("val", 3), ("test", 2))}
    assert dict(counts) == expected
    assert manifest.num_rows == 10 * (5 + 3 + 2)
    # ids and sources are unique, sources point into the bundled digits
    assert len(set(manifest["id"].to_pylist())) == manifest.num_rows
    sources = manifest["source"].to_pylist()
    assert len(set(sources)) == manifest.num_rows
    assert all(s.startswith("digits:") for s in sources)
    # the manifest on disk is the one returned
    assert pq.read_table(folder / "manifest.parquet").equals(manifest)


def test_digits_images_resolution_channels_and_sha256(digits_small):
    folder, params, manifest = digits_small
    for row in manifest.to_pylist():
        path = folder / row["path"]
        assert row["path"] == f"images/{row['split']}/{row['label']}/{row['id']}.png"
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        with Image.open(path) as image:
            assert image.size == (12, 12)
            assert image.mode == "L"
        assert (row["width"], row["height"]) == (12, 12)
    # exactly the manifest's images are on disk
    on_disk = {p.relative_to(folder).as_posix() for p in (folder / "images").rglob("*.png")}
    assert on_disk == set(manifest["path"].to_pylist())


def test_digits_labels_match_the_bundled_targets(digits_small):
    from sklearn.datasets import load_digits

    targets = load_digits().target
    _, _, manifest = digits_small
    for row in manifest.to_pylist():
        index = int(row["source"].split(":")[1])
        assert row["label"] == DIGIT_NAMES[targets[index]]


def test_same_seed_same_split_other_seed_different(tmp_path, digits_small):
    _, params, manifest = digits_small
    again = prepare_dataset(params, tmp_path / "again")
    assert ids_by_split(again) == ids_by_split(manifest)
    assert again["sha256"].to_pylist() == manifest["sha256"].to_pylist()
    other = prepare_dataset(PrepareParams(**{**params.__dict__, "seed": 1}), tmp_path / "other")
    assert ids_by_split(other) != ids_by_split(manifest)
    assert dict(split_counts(other)) == dict(split_counts(manifest))


def test_rerun_replaces_old_images(tmp_path, digits_small):
    _, params, _ = digits_small
    out = tmp_path / "out"
    prepare_dataset(params, out)
    second = prepare_dataset(PrepareParams(**{**params.__dict__, "seed": 7}), out)
    on_disk = {p.relative_to(out).as_posix() for p in (out / "images").rglob("*.png")}
    assert on_disk == set(second["path"].to_pylist())


def test_rgb_channels(tmp_path):
    params = PrepareParams(source="digits", resolution=8, channels=3, **SMALL)
    manifest = prepare_dataset(params, tmp_path)
    row = manifest.to_pylist()[0]
    with Image.open(tmp_path / row["path"]) as image:
        assert image.mode == "RGB" and image.size == (8, 8)


def test_stratified_split_is_exact_and_test_zero_takes_the_rest():
    labels = ["a"] * 10 + ["b"] * 7
    ids = [f"{label}-{k}" for k, label in enumerate(labels)]
    splits = stratified_split(ids, labels, PrepareParams(train_per_class=2, val_per_class=3, test_per_class=0))
    counts = collections.Counter(zip(labels, splits))
    assert counts == {("a", "train"): 2, ("a", "val"): 3, ("a", "test"): 5,
                      ("b", "train"): 2, ("b", "val"): 3, ("b", "test"): 2}
    limited = stratified_split(ids, labels, PrepareParams(train_per_class=2, val_per_class=3, test_per_class=1))
    assert collections.Counter(limited) == {"train": 4, "val": 6, "test": 2, "": 5}


def test_the_reference_pool_is_held_out_from_every_other_split(tmp_path):
    params = PrepareParams(train_per_class=3, val_per_class=4, test_per_class=0, reference_per_class=5, resolution=8)
    manifest = prepare_dataset(params, tmp_path).to_pylist()
    by_split = collections.defaultdict(list)
    for row in manifest:
        by_split[row["split"]].append(row)
    assert set(by_split) == {"train", "val", "reference", "test"}
    for label in {row["label"] for row in manifest}:
        assert sum(r["label"] == label for r in by_split["reference"]) == 5  # exact per class
    reference_ids = {r["id"] for r in by_split["reference"]}
    reference_content = {r["sha256"] for r in by_split["reference"]}
    for split in ("train", "val", "test"):
        assert not reference_ids & {r["id"] for r in by_split[split]}
        assert not reference_content & {r["sha256"] for r in by_split[split]}  # no reference image leaks
    # the reference images come right after validation in each class's seeded order, so the training and
    # validation images are the same with or without a reference pool
    without = prepare_dataset(PrepareParams(train_per_class=3, val_per_class=4, resolution=8), tmp_path / "plain")
    plain = {r["id"]: r["split"] for r in without.to_pylist()}
    assert {r["id"] for r in manifest if r["split"] in ("train", "val")} == {
        i for i, split in plain.items() if split in ("train", "val")}
    assert all(plain[i] == "test" for i in reference_ids)
    ids = [f"a-{k}" for k in range(10)]
    assert "reference" not in stratified_split(ids, ["a"] * 10, PrepareParams(train_per_class=2, val_per_class=2))
    with pytest.raises(DatasetError, match="reference_per_class"):
        stratified_split(ids, ["a"] * 10, PrepareParams(train_per_class=2, val_per_class=2, reference_per_class=6))


def test_split_is_stable_when_images_are_added():
    """New images take their own places: an old image changes split only when pushed down by one."""
    params = PrepareParams(train_per_class=20, val_per_class=10, test_per_class=0, seed=3)
    old_ids = [f"a-{k}" for k in range(100)]
    new_ids = [f"a-new{k}" for k in range(10)]
    before = dict(zip(old_ids, stratified_split(old_ids, ["a"] * 100, params)))
    ids = old_ids + new_ids
    after = dict(zip(ids, stratified_split(ids, ["a"] * 110, params)))
    new_in_train = sum(after[i] == "train" for i in new_ids)
    left_train = sum(before[i] == "train" and after[i] != "train" for i in old_ids)
    assert left_train == new_in_train  # each new training image displaces exactly one old one
    assert sum(before[i] == "train" and after[i] == "train" for i in old_ids) == 20 - new_in_train
    # the split does not depend on the order images are listed in
    shuffled = list(reversed(ids))
    assert dict(zip(shuffled, stratified_split(shuffled, ["a"] * 110, params))) == after
    other_seed = stratified_split(old_ids, ["a"] * 100, PrepareParams(train_per_class=20, val_per_class=10, seed=4))
    assert other_seed != list(before.values())


def test_imagefolder_source(tmp_path, imagefolder):
    (imagefolder / "cat" / "notes.txt").write_text("not an image")
    (imagefolder / ".hidden").mkdir()
    params = PrepareParams(source="imagefolder", image_folder=str(imagefolder), train_per_class=2,
                           val_per_class=1, test_per_class=0, resolution=8, channels=3)
    manifest = prepare_dataset(params, tmp_path / "out")
    assert dict(split_counts(manifest)) == {
        ("cat", "train"): 2, ("cat", "val"): 1, ("cat", "test"): 3,
        ("dog", "train"): 2, ("dog", "val"): 1, ("dog", "test"): 3,
    }
    sources = set(manifest["source"].to_pylist())
    assert sources == {f"{c}/img{k:02d}.png" for c in ("cat", "dog") for k in range(6)}
    for row in manifest.to_pylist():
        with Image.open(tmp_path / "out" / row["path"]) as image:
            assert image.size == (8, 8) and image.mode == "RGB"
        assert hashlib.sha256((tmp_path / "out" / row["path"]).read_bytes()).hexdigest() == row["sha256"]


def test_imagefolder_keeps_pixels_at_same_resolution(tmp_path, make_imagefolder):
    source = make_imagefolder(tmp_path / "src", {"a": 3, "b": 3}, size=(6, 6), mode="L")
    params = PrepareParams(source="imagefolder", image_folder=str(source), train_per_class=1,
                           val_per_class=1, resolution=6, channels=1)
    manifest = prepare_dataset(params, tmp_path / "out")
    for row in manifest.to_pylist():
        written = np.asarray(Image.open(tmp_path / "out" / row["path"]))
        original = np.asarray(Image.open(source / row["source"]))
        assert np.array_equal(written, original)


def _expect_dataset_error(folder: Path, named: str) -> str:
    """prepare on folder stops with a DatasetError naming `named`, and writes no output; returns the message."""
    out = folder.parent / "refused-out"
    with pytest.raises(DatasetError) as info:
        prepare_dataset(folder_params(folder), out)
    assert named in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()
    return str(info.value)


def test_corrupt_image_names_the_file(imagefolder):
    bad = imagefolder / "cat" / "x.png"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 256, dtype=np.uint8).tobytes())
    _expect_dataset_error(imagefolder, str(bad))


def test_truncated_png_names_the_file(imagefolder):
    good = (imagefolder / "dog" / "img00.png").read_bytes()
    bad = imagefolder / "dog" / "truncated.png"
    bad.write_bytes(good[: len(good) // 2])
    _expect_dataset_error(imagefolder, str(bad))


def test_zero_byte_image_names_the_file(imagefolder):
    bad = imagefolder / "dog" / "empty.png"
    bad.write_bytes(b"")
    assert "0 bytes" in _expect_dataset_error(imagefolder, str(bad))


def test_empty_class_folder_names_the_folder(imagefolder):
    empty = imagefolder / "bird"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    _expect_dataset_error(imagefolder, str(empty))


def test_missing_folder_and_no_classes(tmp_path):
    _expect_dataset_error(tmp_path / "absent", str(tmp_path / "absent"))
    (tmp_path / "flat").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "flat" / "a.png")
    _expect_dataset_error(tmp_path / "flat", str(tmp_path / "flat"))


def test_missing_folder_through_prepare_dataset(tmp_path):
    params = PrepareParams(source="imagefolder", image_folder=str(tmp_path / "absent"))
    with pytest.raises(DatasetError, match="absent"):
        prepare_dataset(params, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_unknown_source(tmp_path):
    with pytest.raises(DatasetError, match="'mnist'"):
        prepare_dataset(PrepareParams(source="mnist"), tmp_path)


def test_too_few_images_per_class(tmp_path, make_imagefolder):
    source = make_imagefolder(tmp_path / "src", {"big": 6, "small": 3})
    params = PrepareParams(source="imagefolder", image_folder=str(source), train_per_class=2, val_per_class=1)
    with pytest.raises(DatasetError) as info:
        prepare_dataset(params, tmp_path / "out")
    message = str(info.value)
    assert "'small'" in message and "3 images" in message and "at least 4" in message
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_too_few_digits_per_class(tmp_path):
    with pytest.raises(DatasetError, match="needs at least 301"):
        prepare_dataset(PrepareParams(train_per_class=200, val_per_class=100), tmp_path)


def test_same_stem_different_suffix_gets_distinct_ids(tmp_path, make_imagefolder):
    source = make_imagefolder(tmp_path / "src", {"a": 4, "b": 4})
    Image.open(source / "a" / "img00.png").convert("RGB").save(source / "a" / "img00.jpg")
    params = PrepareParams(source="imagefolder", image_folder=str(source), train_per_class=1,
                           val_per_class=1, resolution=8)
    manifest = prepare_dataset(params, tmp_path / "out")
    assert len(set(manifest["id"].to_pylist())) == manifest.num_rows
    assert len(set(manifest["path"].to_pylist())) == manifest.num_rows



# --- bad input: refused with the file named, or handled so that no result is silently wrong -------------


def folder_params(source: Path, **changes) -> PrepareParams:
    return PrepareParams(**{"source": "imagefolder", "image_folder": str(source), "train_per_class": 2,
                            "val_per_class": 1, "test_per_class": 1, "resolution": 8, **changes})


def test_a_single_class_is_refused(tmp_path, make_imagefolder):
    source = make_imagefolder(tmp_path / "src", {"cat": 6})
    with pytest.raises(DatasetError, match=r"one class only \(cat\); a classifier needs at least two class folders"):
        prepare_dataset(folder_params(source), tmp_path / "out")


def test_16_bit_and_float_images_keep_their_contrast(tmp_path):
    ramp16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)  # 0 .. 63000 of 65535
    sixteen = Image.fromarray(ramp16)
    sixteen.save(tmp_path / "deep.png")
    reread = Image.open(tmp_path / "deep.png")
    assert reread.mode.startswith("I")  # what PIL gives for a 16-bit PNG
    assert np.array_equal(np.asarray(eight_bit(reread)), np.round(ramp16 / 257).astype(np.uint8))
    assert np.asarray(reread.convert("L")).max() == 255 and (np.asarray(reread.convert("L")) == 255).mean() > 0.9
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(ramp, "F").save(tmp_path / "float.tif")
    as_read = eight_bit(Image.open(tmp_path / "float.tif"))
    assert np.asarray(as_read).min() == 0 and np.asarray(as_read).max() == 255  # not all black
    wide = Image.fromarray(ramp * 1000 - 500, "F")  # another range: scaled from its own
    assert np.asarray(eight_bit(wide)).max() == 255 and np.asarray(eight_bit(wide)).min() == 0
    assert eight_bit(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == 7  # 8-bit images are left alone


def test_the_same_image_under_two_labels_is_a_conflict(tmp_path, make_imagefolder):
    source = make_imagefolder(tmp_path / "src", {"cat": 6, "dog": 6})
    (source / "dog" / "img00.png").write_bytes((source / "cat" / "img03.png").read_bytes())
    with pytest.raises(DatasetError) as info:
        prepare_dataset(folder_params(source), tmp_path / "out")
    message = str(info.value)
    assert "dog/img00.png" in message and "cat/img03.png" in message and "two labels" in message


def test_a_copy_within_a_class_is_kept_once(tmp_path, make_imagefolder, caplog):
    source = make_imagefolder(tmp_path / "src", {"cat": 6, "dog": 6})
    (source / "cat" / "copy.png").write_bytes((source / "cat" / "img01.png").read_bytes())
    manifest = prepare_dataset(folder_params(source, test_per_class=0), tmp_path / "out").to_pylist()
    hashes = [row["sha256"] for row in manifest]
    assert len(hashes) == len(set(hashes)) == 12  # the copy is not in any split
    assert "cat/copy.png appears 1 more time(s) in its class (cat/img01.png)" in caplog.text  # sorted: first kept


def test_nested_folders_belong_to_their_class(tmp_path, make_imagefolder):
    source = make_imagefolder(tmp_path / "src", {"cat": 4, "dog": 6})
    make_imagefolder(source / "cat" / "indoor", {"more": 2}, seed=3)
    items = load_imagefolder_source(source)
    cats = [item for item in items if item.label == "cat"]
    assert len(cats) == 6 and {"cat-img00", "cat-indoor_more_img01"} <= {item.id for item in cats}
    assert {item.source for item in cats} >= {"cat/indoor/more/img00.png", "cat/img03.png"}


def test_hidden_files_and_folders_are_skipped(tmp_path, make_imagefolder):
    source = make_imagefolder(tmp_path / "src", {"cat": 4, "dog": 4})
    (source / "cat" / "._img00.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (source / "dog" / ".thumbnails").mkdir()
    (source / "dog" / ".thumbnails" / "t.png").write_bytes(b"not an image")
    assert len(load_imagefolder_source(source)) == 8


def test_a_decompression_bomb_names_the_file(tmp_path, make_imagefolder, monkeypatch):
    source = make_imagefolder(tmp_path / "src", {"cat": 4, "dog": 4})
    Image.new("L", (64, 64)).save(source / "dog" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 = 4096 pixels is then a bomb
    message = _expect_dataset_error(source, "huge.png")
    assert "decompression bombs" in message and "downscale" in message


def test_model_resolution_copies_come_from_the_source_resized_once(tmp_path, make_imagefolder):
    from mvcaug.method.caption import image_key, image_path
    from mvcaug.io.images import load_split
    from mvcaug.data.prepare import png_bytes, to_working_image

    source = make_imagefolder(tmp_path / "src", {"cat": 5, "dog": 5}, size=(48, 48))
    params = folder_params(source, resolution=16, model_resolution=32, channels=3)
    manifest = prepare_dataset(params, tmp_path / "out").to_pylist()
    train = [r for r in manifest if r["split"] == "train"]
    assert all(r["model_path"].startswith("images_model/train/") for r in train)
    assert all(r["model_path"] == "" for r in manifest if r["split"] != "train")
    row = train[0]
    with Image.open(source / row["source"]) as original:
        once = png_bytes(to_working_image(original, 32, 3))
    written = (tmp_path / "out" / row["model_path"]).read_bytes()
    assert written == once  # the source resized once to 32 px ...
    with Image.open(tmp_path / "out" / row["path"]) as working:
        upsampled = png_bytes(working.resize((32, 32), Image.Resampling.BICUBIC))
    assert written != upsampled  # ... not the 16 px working image upsampled
    assert image_path(row) == row["model_path"] and image_key(row) == hashlib.sha256(written).hexdigest()
    models = load_split(tmp_path / "out", "train", 3, model_resolution=True)
    assert models.pixels.shape[-1] == 32 and load_split(tmp_path / "out", "train", 3).pixels.shape[-1] == 16
    plain = prepare_dataset(folder_params(source, resolution=16, channels=3), tmp_path / "plain")
    assert "model_path" not in plain.column_names  # off: the manifest is as before


def test_the_manifest_names_every_prepared_file_with_its_sha256(tmp_path, make_imagefolder):
    """Downstream stages depend in dvc.yaml on the manifest alone, not on the folder (DVC then hashes one
    file instead of walking ~1,800 images in every stage of a no-op `dvc repro`). That is sound only if
    the manifest changes whenever any file beside it does: every file, working and model copy alike, is
    named in it with the sha256 of its bytes."""
    import yaml

    from mvcaug.io.digests import PROJECT_ROOT

    source = make_imagefolder(tmp_path / "src", {"cat": 5, "dog": 5}, size=(48, 48))
    out = tmp_path / "out"
    rows = prepare_dataset(folder_params(source, resolution=16, model_resolution=32, channels=3), out).to_pylist()
    listed = {row["path"]: row["sha256"] for row in rows}
    listed |= {row["model_path"]: row["model_sha256"] for row in rows if row["model_path"]}
    on_disk = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in out.rglob("*") if p.is_file() and p.name != "manifest.parquet"}
    assert on_disk == listed
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    readers = {name for name, stage in stages.items() if "${paths.prepared}/${files.manifest}" in stage["deps"]}
    assert "${paths.prepared}" in stages["prepare"]["outs"]
    assert not [name for name, stage in stages.items() if "${paths.prepared}" in stage["deps"]]
    assert readers == {"caption", "finetune", "generate", "filter", "quality", "train", "replicates", "report"}


# --- ids, failures, names, pixels, geometry and memory of an image folder ------------------------------------


@pytest.mark.parametrize("first, second", [
    ("cat/x.png", "cat/x.PNG"),  # the suffix's case is ignored
    ("cat/sub/y.png", "cat/sub_y.png"),  # sub-folders are joined with _
    ("cat-b/c.png", "cat/b-c.png"),  # the class is joined to the name with -
    ("cat/Z.png", "cat/z.png"),  # one file on a case-insensitive file system
])
def test_two_files_with_one_image_id_are_refused_naming_both(tmp_path, make_imagefolder, first, second):
    """One would overwrite the other's PNG (the manifest's sha256 then names other bytes), and generate,
    which looks conditioning images up by id, could condition one class on another class's image."""
    source = make_imagefolder(tmp_path / "src", {"cat": 5, "dog": 5, "cat-b": 5})
    for k, name in enumerate((first, second)):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (10, 14), (40 * k, 200, 90)).save(source / name, format="PNG")
    message = _expect_dataset_error(source, first)
    assert second in message and "same image id" in message and "rename one" in message


def test_a_failed_rerun_leaves_the_last_good_output_whole(tmp_path, make_imagefolder, monkeypatch):
    """The folder is built beside the last good one and swapped in at the end: a run that fails while
    writing (here a full disk at the manifest, the last write) or stops at a corrupt image midway leaves the
    old manifest naming exactly the files on disk, with their hashes, and no half-built folder."""
    import tasks.prepare
    from mvcaug.core.errors import DiskFullError

    source = make_imagefolder(tmp_path / "src", {"cat": 6, "dog": 6})
    out = tmp_path / "out"
    prepare_dataset(folder_params(source), out)
    good = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def disk_full(target, table):
        raise DiskFullError(f"{target}: no space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(tasks.prepare, "write_parquet", disk_full)
        with pytest.raises(DiskFullError):
            prepare_dataset(folder_params(source, seed=5), out)  # another split: other paths
    (source / "dog" / "zz-corrupt.png").write_bytes(b"\x89PNG not really an image")
    with pytest.raises(DatasetError, match="zz-corrupt.png"):
        prepare_dataset(folder_params(source, seed=6), out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # nothing half-built beside it


def test_a_name_that_is_not_utf8_is_refused_in_one_line(tmp_path, make_imagefolder):
    source = make_imagefolder(tmp_path / "src", {"cat": 6, "dog": 6})
    Image.new("RGB", (10, 14), "red").save(os.fsdecode(bytes(source / "cat") + b"/caf\xe9.png"), format="PNG")
    message = _expect_dataset_error(source, "caf\\xe9.png")
    assert "not valid UTF-8" in message and "rename" in message
    message.encode("utf-8")  # printable as it is
    shutil.rmtree(source / "cat")
    make_imagefolder(Path(os.fsdecode(bytes(source) + b"/\xff-class")), {"x": 6})  # a class folder too
    assert "not valid UTF-8" in _expect_dataset_error(source, "\\xff-class")


def test_an_image_folder_that_is_a_file_is_named_as_a_file(tmp_path):
    (tmp_path / "images.zip").write_bytes(b"PK\x03\x04")
    message = _expect_dataset_error(tmp_path / "images.zip", "images.zip")
    assert "is a file, not a folder" in message and "does not exist" not in message


def test_an_unreadable_class_folder_is_named_as_unreadable_not_empty(tmp_path, make_imagefolder, monkeypatch):
    source = make_imagefolder(tmp_path / "src", {"cat": 6, "dog": 6})
    locked = source / "dog"
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads it anyway: give it the refusal the kernel gives any other user
        real_scandir = os.scandir

        def scandir(path="."):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        message = _expect_dataset_error(source, str(locked))
    finally:
        locked.chmod(0o755)
    assert "cannot be read" in message and "empty" not in message and "chmod" in message


def test_nan_and_infinite_pixels_are_left_out_of_the_range(tmp_path, make_imagefolder, caplog):
    """One NaN made the 8-bit range NaN and the whole image black; two such images were then one content,
    and one was dropped as the other's copy."""
    ramp = np.linspace(0, 10, 64, dtype=np.float32).reshape(8, 8)
    odd = ramp.copy()
    odd[3, 3], odd[3, 4], odd[3, 5] = np.nan, np.inf, -np.inf  # neither the lowest nor the highest
    scaled = np.asarray(eight_bit(Image.fromarray(odd, "F")))
    assert scaled[3, 3] == 0 and scaled[3, 4] == 255 and scaled[3, 5] == 0  # as documented
    finite = np.isfinite(odd)
    assert np.array_equal(scaled[finite], np.asarray(eight_bit(Image.fromarray(ramp, "F")))[finite])
    assert scaled.max() == 255 and scaled[finite].min() == 0  # the range of the finite pixels
    source = make_imagefolder(tmp_path / "src", {"a": 5, "b": 5})
    for k in range(2):
        pixels = (ramp if k else ramp.T).copy()
        pixels[3, 3] = np.nan
        Image.fromarray(pixels, "F").save(source / "a" / f"float{k}.tif")
    manifest = prepare_dataset(folder_params(source, resolution=8, test_per_class=0), tmp_path / "out").to_pylist()
    floats = [row for row in manifest if row["source"].startswith("a/float")]
    assert len(floats) == 2  # both kept: neither is a black "copy" of the other
    for row in floats:
        pixels = np.asarray(Image.open(tmp_path / "out" / row["path"]).convert("L"))
        assert pixels.max() == 255 and pixels[3, 3] == 0
    assert "a/float0.tif: 1 NaN or infinite pixel(s)" in caplog.text
    Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32), "F").save(source / "b" / "blank.tif")
    assert "every pixel is NaN" in _expect_dataset_error(source, str(source / "b" / "blank.tif"))


@pytest.mark.parametrize("channels", [1, 3])
def test_transparent_pixels_are_composited_on_white(tmp_path, channels):
    """The colour a file keeps under transparent pixels (here red) is hidden: it must not become the
    background. RGBA, LA and a palette image with a transparent entry alike."""
    from mvcaug.data.prepare import to_working_image

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere, ...
    rgba[2:6, 2:6] = (0, 0, 255, 255)  # ... opaque only in a blue square
    la = Image.fromarray(rgba[..., [2, 3]], "LA")  # the blue square as white ink, its surround transparent
    palette = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
    palette.info["transparency"] = palette.getpixel((0, 0))
    for name, image in (("rgba", Image.fromarray(rgba, "RGBA")), ("la", la), ("p", palette)):
        image.save(tmp_path / f"{name}.png")
        with Image.open(tmp_path / f"{name}.png") as reread:
            out = to_working_image(reread, 8, channels).convert("RGB")
        assert out.getpixel((0, 0)) == (255, 255, 255), name  # white, as README states (ALPHA_BACKGROUND)
        assert out.getpixel((4, 4)) != (255, 255, 255) or name == "la", name


def test_tiny_sources_are_warned_about(tmp_path, make_imagefolder, caplog):
    source = make_imagefolder(tmp_path / "src", {"a": 5, "b": 5}, size=(5, 4))
    prepare_dataset(folder_params(source, resolution=16), tmp_path / "out")
    assert "10 source image(s) are under 8 px on their short side, e.g. a/img00.png (5x4)" in caplog.text
    caplog.clear()
    prepare_dataset(folder_params(source, resolution=16, model_resolution=64), tmp_path / "out2")
    assert "under 16 px" in caplog.text and "upscaled to 64 px" in caplog.text
    caplog.clear()
    big = make_imagefolder(tmp_path / "big", {"a": 5, "b": 5}, size=(8, 8))
    prepare_dataset(folder_params(big, resolution=32), tmp_path / "out3")
    assert "source image(s) are under" not in caplog.text  # 8 px is a quarter of 32


def write_bars(path: Path, exif_orientation: int = 1, white: int = 255) -> None:
    """A 40 x 20 white image with 8 px blue bars at its left and right ends."""
    pixels = np.full((20, 40, 3), white, dtype=np.uint8)
    pixels[:, :8] = pixels[:, -8:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = exif_orientation  # Orientation
    image.save(path, format="PNG", exif=exif)


def test_non_square_sources_follow_prepare_resize(tmp_path, make_imagefolder):
    """center_crop (the default) keeps the middle, pad scales the whole into the square with black borders,
    squash stretches it (the old behaviour, shapes distorted); the model-resolution copies alike, and an image
    folder's manifest records the mode."""
    source = make_imagefolder(tmp_path / "src", {"b": 5})
    (source / "a").mkdir()
    for k in range(5):  # class a: bars on five shades of white (all differ in the middle)
        write_bars(source / "a" / f"bars{k}.png", white=255 - 2 * k)
    seen = {}
    for mode in ("center_crop", "pad", "squash"):
        out = tmp_path / mode
        params = folder_params(source, resolution=20, model_resolution=40, channels=3, resize=mode)
        rows = prepare_dataset(params, out).to_pylist()
        bars = [row for row in rows if row["label"] == "a"]
        train = next(row for row in bars if row["split"] == "train")
        seen[mode] = np.asarray(Image.open(out / train["path"]))
        written = [(np.asarray(Image.open(out / row["path"])), 20) for row in bars]
        for pixels, size in written + [(np.asarray(Image.open(out / train["model_path"])), 40)]:
            blue = (pixels[..., 2] > 200) & (pixels[..., 0] < 60)
            black = pixels.max(axis=2) < 30
            assert pixels.shape == (size, size, 3)
            if mode == "center_crop":
                assert not blue.any() and not black.any()  # the middle 20 x 20 of 40 x 20: all white
            elif mode == "pad":
                assert black[0].all() and black[-1].all() and blue[size // 2, 0] and not black[size // 2].any()
            else:
                assert blue[:, 0].all() and blue[:, -1].all() and not black.any()
        assert {row["resize"] for row in rows} == {mode}
    assert len({data.tobytes() for data in seen.values()}) == 3


def test_exif_orientation_is_applied(tmp_path, make_imagefolder):
    """Phones store most portrait photos sideways with an EXIF Orientation tag: 6 means turn 90 degrees
    clockwise to view. The stored 40 x 20 bars (blue at the left and right) are then a 20 x 40 portrait with
    blue at the top and bottom."""
    source = make_imagefolder(tmp_path / "src", {"a": 5, "b": 5})
    write_bars(tmp_path / "plain.png")
    write_bars(source / "a" / "tagged.png", exif_orientation=6)
    params = folder_params(source, resolution=20, channels=3, test_per_class=0, resize="squash")
    rows = {row["source"]: row for row in prepare_dataset(params, tmp_path / "out").to_pylist()}
    written = np.asarray(Image.open(tmp_path / "out" / rows["a/tagged.png"]["path"]))
    with Image.open(tmp_path / "plain.png") as plain:
        assert Image.open(source / "a" / "tagged.png").size == (40, 20)  # as stored
        expected = plain.transpose(Image.Transpose.ROTATE_270).resize((20, 20), Image.Resampling.BICUBIC)
    assert np.array_equal(written, np.asarray(expected))
    assert written[0, :, 2].min() > 200 and written[0, :, 0].max() < 60  # blue along the top


def test_square_sources_are_the_same_in_every_resize_mode():
    """The bundled digits are 8 x 8 squares: each mode gives the very bytes the default pipeline wrote."""
    from mvcaug.data.prepare import load_digits_source, png_bytes, to_working_image

    for item in load_digits_source()[:20]:
        image = item.image
        expected = png_bytes(image.resize((16, 16), Image.Resampling.BICUBIC))
        assert {png_bytes(to_working_image(image, 16, 1, mode)) for mode in ("center_crop", "pad", "squash")} == {
            expected}


def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """Each image is converted and written as it is read: 32 photos peak at about the memory of 8, where
    holding every decoded photo until all are converted grew by about one decoded photo per photo."""
    spec = importlib.util.spec_from_file_location("prepare_memory", ROOT / "benchmarks" / "prepare_memory.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    size = (1600, 1200)
    peaks = {}
    for count in (8, 32):
        folder = bench.write_photos(tmp_path / f"photos-{count}", count, size)
        peaks[count] = bench.peak_rss_of_prepare(folder, tmp_path / f"out-{count}")
    decoded = size[0] * size[1] * 3
    assert peaks[32] - peaks[8] < 24 * decoded / 4, peaks  # held, they would add 24 decoded photos or more


# --- a user's own image folder: names, links, files left out, odd pixels -----------------------------------


@pytest.mark.parametrize("first, second", [("Cat", "cat"), ("caf\u00e9", "cafe\u0301")])  # case; NFC and NFD
def test_class_folders_that_differ_only_in_case_or_unicode_form_are_refused(tmp_path, make_imagefolder, first,
                                                                            second):
    source = make_imagefolder(tmp_path / "src", {first: 4}, seed=1)
    make_imagefolder(source, {second: 4}, seed=2)  # other files: no image id clashes, only the class names
    for k in range(4):
        os.rename(source / second / f"img{k:02d}.png", source / second / f"other{k:02d}.png")
    message = _expect_dataset_error(source, "differ only in letter case or Unicode form")
    assert repr(first) in message and repr(second) in message


def test_a_name_with_a_control_character_is_refused_in_one_line(tmp_path, make_imagefolder):
    source = make_imagefolder(tmp_path / "src", {"cat\nsat": 4, "dog": 4})
    assert "control character" in _expect_dataset_error(source, "cat\\nsat")
    shutil.rmtree(source / "cat\nsat")
    make_imagefolder(source, {"cat": 4})
    Image.new("RGB", (10, 14), "red").save(source / "cat" / "x\ty.png")
    assert "control character" in _expect_dataset_error(source, "x\\ty.png")


def test_a_dangling_symlink_is_refused_naming_it(tmp_path, make_imagefolder):
    """A link to an unmounted drive used to drop its class (or image) without a word."""
    source = make_imagefolder(tmp_path / "src", {"cat": 4, "dog": 4})
    (source / "bird").symlink_to(tmp_path / "unmounted" / "bird")
    message = _expect_dataset_error(source, str(source / "bird"))
    assert str(tmp_path / "unmounted" / "bird") in message and "does not exist" in message
    (source / "bird").unlink()
    (source / "cat" / "gone.png").symlink_to(tmp_path / "unmounted" / "gone.png")
    assert "a symlink to" in _expect_dataset_error(source, str(source / "cat" / "gone.png"))


def test_files_that_are_not_read_are_warned_about(tmp_path, make_imagefolder, caplog):
    """iPhone .heic photos, an image beside the class folders and a linked subfolder are left out: said so."""
    source = make_imagefolder(tmp_path / "src", {"cat": 4, "dog": 4})
    elsewhere = make_imagefolder(tmp_path / "elsewhere", {"more": 2}, seed=5)
    Image.new("RGB", (10, 14), "red").save(source / "cat" / "IMG_0001.heic", format="JPEG")
    Image.new("RGB", (10, 14), "blue").save(source / "stray.png")
    (source / "dog" / "linked").symlink_to(elsewhere / "more")
    (source / "dog" / "Thumbs.db").write_bytes(b"windows thumbnail cache")  # junk: no word about it
    (source / "dog" / ".DS_Store").write_bytes(b"finder")
    assert len(load_imagefolder_source(source)) == 8
    assert "3 file(s) or linked folder(s) are not read, e.g. cat/IMG_0001.heic, dog/linked, stray.png" in caplog.text
    caplog.clear()
    load_imagefolder_source(make_imagefolder(tmp_path / "clean", {"cat": 4, "dog": 4}))
    assert "not read" not in caplog.text


def test_test_per_class_more_than_is_left_is_refused(tmp_path, make_imagefolder):
    """10 test images per class asked, 3 left: the test split silently had 3 (fewer in some classes)."""
    source = make_imagefolder(tmp_path / "src", {"a": 6, "b": 8})
    with pytest.raises(DatasetError, match=r"class 'a' has 6 images; the split needs at least 13 .*test_per_class"):
        prepare_dataset(folder_params(source, test_per_class=10), tmp_path / "out")
    manifest = prepare_dataset(folder_params(source, test_per_class=3), tmp_path / "out")  # exactly enough for a
    assert dict(split_counts(manifest))[("a", "test")] == 3 == dict(split_counts(manifest))[("b", "test")]
    with pytest.raises(DatasetError, match="has 6 images; the split needs at least 7"):
        prepare_dataset(folder_params(source, test_per_class=4), tmp_path / "out")  # one too few


def test_an_image_id_too_long_for_a_file_name_is_refused(tmp_path, make_imagefolder):
    """A 150-byte class and a 150-byte file name are each fine, but the id joins them: 300 bytes was a
    traceback (File name too long) midway through the build."""
    source = make_imagefolder(tmp_path / "src", {"c" * 150: 4, "dog": 4})
    os.rename(source / ("c" * 150) / "img00.png", source / ("c" * 150) / ("f" * 150 + ".png"))
    message = _expect_dataset_error(source, "f" * 150 + ".png")
    assert "image id of 301 bytes" in message and "shorten the file or class name" in message


def test_digits_with_an_image_folder_set_warns_that_it_is_not_read(tmp_path, make_imagefolder, caplog):
    """Setting prepare.image_folder but leaving prepare.source at digits silently prepared the digits."""
    source = make_imagefolder(tmp_path / "src", {"cat": 4, "dog": 4})
    manifest = prepare_dataset(PrepareParams(image_folder=str(source), **SMALL), tmp_path / "out")
    assert set(manifest["label"].to_pylist()) == set(DIGIT_NAMES)
    assert f"prepare.image_folder ({source}) is not read; set prepare.source: imagefolder" in caplog.text


def test_a_tilde_in_the_image_folder_is_explained(tmp_path):
    """The folder is not found, but a user who wrote ~/photos believes it exists: the message says why."""
    with pytest.raises(DatasetError, match="'~/no-such-photos' does not exist \\(a leading ~ is not expanded"):
        prepare_dataset(folder_params(Path("~/no-such-photos")), tmp_path / "out")


def test_a_sliver_padded_keeps_its_pixels(tmp_path, make_imagefolder):
    """A 64 x 1 strip under prepare.resize: pad was scaled to 8 x 0 px: an all-black square (and a 1 x 64
    strip in another class the same black square, refused as one image under two labels)."""
    from mvcaug.data.prepare import to_working_image

    strip = Image.fromarray(np.full((1, 64, 3), 200, dtype=np.uint8))
    for image in (strip, strip.transpose(Image.Transpose.TRANSPOSE)):
        out = np.asarray(to_working_image(image, 8, 3, "pad"))
        assert out.max() == 200 and (out == 200).all(axis=2).sum() == 8  # a one-pixel line across the square
    source = make_imagefolder(tmp_path / "src", {"a": 4, "b": 4})
    strip.save(source / "a" / "wide.png")
    strip.transpose(Image.Transpose.TRANSPOSE).save(source / "b" / "tall.png")
    assert prepare_dataset(folder_params(source, resize="pad"), tmp_path / "out").num_rows == 8


def test_garbled_exif_metadata_is_warned_about_not_a_traceback(tmp_path, make_imagefolder, caplog):
    source = make_imagefolder(tmp_path / "src", {"a": 4, "b": 4})
    Image.new("RGB", (10, 14), "red").save(source / "a" / "photo.jpg", exif=b"Exif\x00\x00" + b"\xff" * 40)
    manifest = prepare_dataset(folder_params(source, test_per_class=0), tmp_path / "out")
    assert "a/photo.jpg" in manifest["source"].to_pylist()
    assert "photo.jpg: its EXIF metadata cannot be read" in caplog.text


def test_different_files_equal_once_prepared_are_named_as_such(tmp_path, make_imagefolder):
    """Two files that differ only where center_crop cuts are one working image: refused as a label
    conflict, but the message no longer claims the files are the same image."""
    source = make_imagefolder(tmp_path / "src", {"a": 4, "b": 4})
    pixels = np.random.default_rng(0).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(source / "a" / "x.png")
    pixels[:, :3] = 0  # only the part center_crop cuts away
    Image.fromarray(pixels).save(source / "b" / "y.png")
    message = _expect_dataset_error(source, "b/y.png")
    assert "the files differ, but at prepare.resolution 8 px" in message
    (source / "b" / "y.png").write_bytes((source / "a" / "x.png").read_bytes())
    assert "files differ" not in _expect_dataset_error(source, "b/y.png")
