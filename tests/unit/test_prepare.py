"""prepare: sources, the stratified split, written images and the manifest; errors name the file."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mvcaug.params import PrepareParams
from tasks.prepare import prepare_dataset
from mvcaug.prepare import (
    DIGIT_NAMES, MANIFEST_COLUMNS, DatasetError, eight_bit, load_imagefolder_source, stratified_split,
)

SMALL = dict(train_per_class=5, val_per_class=3, test_per_class=2)


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


def _expect_dataset_error(folder: Path, named: str) -> None:
    with pytest.raises(DatasetError) as info:
        load_imagefolder_source(folder)
    assert named in str(info.value)


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
    with pytest.raises(DatasetError, match="0 bytes") as info:
        load_imagefolder_source(imagefolder)
    assert str(bad) in str(info.value)


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
    with pytest.raises(DatasetError) as info:
        load_imagefolder_source(source)
    message = str(info.value)
    assert "huge.png" in message and "decompression bombs" in message and "downscale" in message


def test_model_resolution_copies_come_from_the_source_resized_once(tmp_path, make_imagefolder):
    from mvcaug.caption import image_key, image_path
    from mvcaug.images import load_split
    from mvcaug.prepare import png_bytes, to_working_image

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

    from mvcaug.digests import PROJECT_ROOT

    source = make_imagefolder(tmp_path / "src", {"cat": 5, "dog": 5}, size=(48, 48))
    out = tmp_path / "out"
    rows = prepare_dataset(folder_params(source, resolution=16, model_resolution=32, channels=3), out).to_pylist()
    listed = {row["path"]: row["sha256"] for row in rows}
    listed |= {row["model_path"]: row["model_sha256"] for row in rows if row["model_path"]}
    on_disk = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in out.rglob("*") if p.is_file() and p.name != "manifest.parquet"}
    assert on_disk == listed
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    readers = {name for name, stage in stages.items() if "${paths.prepared}/manifest.parquet" in stage["deps"]}
    assert "${paths.prepared}" in stages["prepare"]["outs"]
    assert not [name for name, stage in stages.items() if "${paths.prepared}" in stage["deps"]]
    assert readers == {"caption", "finetune", "generate", "filter", "quality", "train", "report"}
