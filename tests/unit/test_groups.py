"""groups.csv beside an image folder's class folders: which images belong together (one writer's, one patient's),
so the bootstrap resamples a group's test images together."""

from __future__ import annotations

import dataclasses
import pyarrow.parquet as pq
import pytest

from mvcaug.core.params import Params, PathsParams, PrepareParams
from mvcaug.data.prepare import GROUP_COLUMN, DatasetError
from mvcaug.io.image_folders import load_imagefolder_source, read_groups
from tasks.prepare import prepare_dataset
from tasks.report import test_clusters as clusters_of_test_images

PARAMS = PrepareParams(source="imagefolder", train_per_class=2, val_per_class=1, test_per_class=0,
                       reference_per_class=0, resolution=8, channels=1)


def test_groups_go_into_the_manifest_and_cluster_the_test_images(make_imagefolder, tmp_path):
    folder = make_imagefolder(tmp_path / "source", {"cat": 6, "dog": 6})
    (folder / "groups.csv").write_text("file_name,group\n" + "".join(
        f"{label}/img{k:02d}.png,{'anna' if k % 2 else 'ben'}\n" for label in ("cat", "dog") for k in range(5)))
    out = tmp_path / "prepared"
    manifest = prepare_dataset(dataclasses.replace(PARAMS, image_folder=str(folder)), out)
    groups = dict(zip(manifest["source"].to_pylist(), manifest[GROUP_COLUMN].to_pylist()))
    assert groups["cat/img01.png"] == "anna" and groups["dog/img04.png"] == "ben" and groups["cat/img05.png"] == ""
    params = Params(paths=PathsParams(prepared=str(out)))
    clusters = clusters_of_test_images(params)
    test = sorted((r for r in pq.read_table(out / "manifest.parquet").to_pylist() if r["split"] == "test"),
                  key=lambda r: r["id"])
    assert clusters is not None and len(clusters) == len(test) == 6
    expected = [f"group:{r[GROUP_COLUMN]}" if r[GROUP_COLUMN] else f"image:{r['id']}" for r in test]
    assert list(clusters) == expected  # in test-id order, as the cells' correctness vectors are
    assert len(set(clusters)) < len(clusters)  # at least two test images share a writer


def test_without_groups_there_is_no_column_and_no_cluster(make_imagefolder, tmp_path):
    folder = make_imagefolder(tmp_path / "source", {"cat": 5, "dog": 5})
    out = tmp_path / "prepared"
    manifest = prepare_dataset(dataclasses.replace(PARAMS, image_folder=str(folder)), out)
    assert GROUP_COLUMN not in manifest.column_names
    assert clusters_of_test_images(Params(paths=PathsParams(prepared=str(out)))) is None


@pytest.mark.parametrize("text, message", [
    ("name,who\ncat/img00.png,a\n", "needs the columns file_name and group"),
    ("file_name,group\ncat/missing.png,a\n", r"groups.csv:2: 'cat/missing.png' is no image of"),
    ("file_name,group\ncat/img00.png,a\ncat/img00.png,b\n", r"groups.csv:3: 'cat/img00.png' is named twice"),
])
def test_a_bad_groups_file_is_one_line_naming_it(make_imagefolder, tmp_path, text, message):
    folder = make_imagefolder(tmp_path / "source", {"cat": 2, "dog": 2})
    (folder / "groups.csv").write_text(text)
    with pytest.raises(DatasetError, match=message) as info:
        read_groups(folder, load_imagefolder_source(folder))
    assert "\n" not in str(info.value)
    assert (folder / "groups.csv").read_text() == text
