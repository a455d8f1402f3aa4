"""Export as a Hugging Face ImageFolder: what goes in, and both loaders read it with the right classes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from mvcaug.core.errors import MissingInputError
from mvcaug.core.params import Params, PathsParams, PrepareParams
from tasks.export import ExportError, plan_export, write_export
from tasks.prepare import prepare_dataset


@pytest.fixture
def project(tmp_path: Path) -> Params:
    """Prepared digits (2 training images per class), their captions, and a synthetic set of 2 images per
    class (copies of training images, stand-ins) with filter decisions: the second of each class dropped."""
    paths = PathsParams(prepared=str(tmp_path / "prepared"), captions=str(tmp_path / "captions.parquet"),
                        synthetic=str(tmp_path / "synthetic"), filter=str(tmp_path / "filter"))
    manifest = prepare_dataset(PrepareParams(train_per_class=2, val_per_class=1, test_per_class=1, resolution=8),
                               paths.prepared).to_pylist()
    train = [r for r in manifest if r["split"] == "train"]
    pa.parquet.write_table(pa.table({"id": [r["id"] for r in train], "label": [r["label"] for r in train],
                                     "caption": [f"This is an image of {r['label']}. ({r['id']})" for r in train]}),
                           paths.captions)
    decisions, seen = [], {}
    for k, row in enumerate(sorted(train, key=lambda r: r["label"])):
        index = seen[row["label"]] = seen.get(row["label"], -1) + 1
        shard = f"shard-{row['label']}-0000"
        rel = f"{shard}/{row['label']}-{index:05d}.png"
        (Path(paths.synthetic) / shard).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(paths.prepared) / row["path"], Path(paths.synthetic) / rel)
        decisions.append({"path": rel, "label": row["label"], "shard": shard, "index": index, "seed": 100 + k,
                          "mixed_id": f"{row['label']}-mix{index:05d}", "cond_id": row["id"], "kept": index == 0,
                          "reason": "" if index == 0 else "near_copy"})
    Path(paths.filter).mkdir()
    pa.parquet.write_table(pa.Table.from_pylist(decisions), Path(paths.filter) / "mvc.parquet")
    return Params(paths=paths)


def lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


def test_only_kept_synthetic_images_by_default(project, tmp_path):
    out = tmp_path / "out"
    counts = write_export.fn(plan_export.fn(project, False, False), str(out), False)
    assert counts == {label: 1 for label in counts} and len(counts) == 10
    records = lines(out)
    assert len(records) == 10 and all(r["kept"] and r["source"] == "synthetic" for r in records)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == sorted(r["file_name"] for r in records)
    first = records[0]
    assert first["file_name"].startswith(f"{first['label']}/syn-") and first["mixed_id"].endswith("mix00000")
    assert first["seed"] == 100 and first["cond_id"] and first["caption"] == ""


def test_dropped_images_and_the_real_split_on_request(project, tmp_path):
    out = tmp_path / "out"
    write_export.fn(plan_export.fn(project, True, True), str(out), False)
    records = lines(out)
    synthetic = [r for r in records if r["source"] == "synthetic"]
    real = [r for r in records if r["source"] == "real"]
    assert len(synthetic) == 20 and sum(not r["kept"] for r in synthetic) == 10
    assert {r["reason"] for r in synthetic if not r["kept"]} == {"near_copy"}
    assert len(real) == 20 and all(r["caption"].startswith(f"This is an image of {r['label']}.") for r in real)
    source = Path(project.paths.prepared)
    row = next(r for r in real)
    assert (out / row["file_name"]).read_bytes() == next(source.rglob(Path(row["file_name"]).name.removeprefix(
        "real-"))).read_bytes()  # a byte-for-byte copy


def test_both_loaders_read_the_classes(project, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    write_export.fn(plan_export.fn(project, True, False), str(out), False)
    import datasets
    from torchvision.datasets import ImageFolder

    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert len(loaded) == 30
    expected = {r["file_name"]: r["label"] for r in lines(out)}
    assert sorted(loaded["label"]) == sorted(expected.values())  # the metadata's label, as a string column
    assert set(loaded.column_names) >= {"image", "label", "source", "kept", "mixed_id"}
    folder = ImageFolder(str(out))
    assert len(folder) == 30 and folder.classes == sorted(set(expected.values()))
    assert all(folder.classes[target] == Path(path).parent.name for path, target in folder.samples)


def test_a_non_empty_target_is_refused_without_force_and_inputs_must_exist(project, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    files = plan_export.fn(project, False, False)
    with pytest.raises(ExportError, match="exists and is not empty; choose another folder or pass --force"):
        write_export.fn(files, str(out), False)
    assert (out / "keep.txt").read_text() == "mine"
    write_export.fn(files, str(out), True)
    assert not (out / "keep.txt").exists() and (out / "metadata.jsonl").is_file()
    (Path(project.paths.filter) / "mvc.parquet").unlink()
    with pytest.raises(MissingInputError, match="mvc.parquet: no filter decisions; run the filter stage first"):
        plan_export.fn(project, False, False)
