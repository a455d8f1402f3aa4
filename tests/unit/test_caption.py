"""Captions: the offline attribute describer on real digits, the file backend, and its errors."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.compute as pc
import pytest
from PIL import Image

from mvcaug.io.captions import read_caption_file
from mvcaug.io.captions import build_captioner
from mvcaug.method.caption import AttributeCaptioner, CaptionError, FileCaptioner, prefixed
from mvcaug.io.images import read_manifest
from mvcaug.core.params import CaptionParams, PrepareParams
from tasks.prepare import prepare_dataset
from tests.captions import caption_manifest


def test_attribute_captions_on_real_digits(digits_prepared):
    folder, manifest = digits_prepared
    table = caption_manifest(manifest, folder, AttributeCaptioner(), CaptionParams(batch_size=7))
    assert table.column_names == ["id", "label", "caption", "captioner"]
    train = [r for r in manifest.to_pylist() if r["split"] == "train"]
    assert table["id"].to_pylist() == [r["id"] for r in train]
    assert table["label"].to_pylist() == [r["label"] for r in train]
    assert set(table["captioner"].to_pylist()) == {"attributes-v1"}
    by_class = collections.defaultdict(list)
    for row in table.to_pylist():
        head = f"This is an image of {row['label']}."
        assert row["caption"].startswith(head + " ")
        body = row["caption"][len(head):].strip()
        assert body.startswith("A ") and body.endswith(".") and len(body) > 20
        by_class[row["label"]].append(row["caption"])
    assert len(by_class) == 10
    for label, captions in by_class.items():
        assert len(set(captions)) >= 2, f"all captions of '{label}' are the same: {captions[0]}"


def test_attribute_captions_are_deterministic_and_batch_independent(digits_prepared):
    folder, manifest = digits_prepared
    one = caption_manifest(manifest, folder, AttributeCaptioner(), CaptionParams(batch_size=1))
    many = caption_manifest(manifest, folder, AttributeCaptioner(), CaptionParams(batch_size=64))
    assert one.equals(many)


def test_attribute_captions_see_the_image():
    # The same shape drawn thin and small vs thick and large must not read the same.
    small = Image.new("L", (16, 16))
    small.paste(255, (7, 6, 8, 10))
    large = Image.new("L", (16, 16))
    large.paste(255, (1, 1, 15, 15))
    thin, thick = AttributeCaptioner().describe([small, large], ["a", "b"])
    assert thin != thick
    assert "small" in thin and "large" in thick
    assert thin.startswith("A thin") and thick.startswith("A thick")


def test_custom_prefix(digits_prepared):
    folder, manifest = digits_prepared
    table = caption_manifest(manifest, folder, AttributeCaptioner(), CaptionParams(prefix="A photo of a {label}."))
    assert all(c.startswith(f"A photo of a {label}. ") for c, label in
               zip(table["caption"].to_pylist(), table["label"].to_pylist()))
    assert prefixed("cat", "  fluffy.  ", "This is an image of {label}.") == "This is an image of cat. fluffy."


@pytest.fixture
def prepared_folder(tmp_path, imagefolder):
    """The tiny cat/dog folder prepared: (image folder, prepared folder, manifest)."""
    params = PrepareParams(source="imagefolder", image_folder=str(imagefolder), train_per_class=2,
                           val_per_class=1, test_per_class=0, resolution=8, channels=3)
    out = tmp_path / "prepared"
    prepare_dataset(params, out)
    return imagefolder, out, read_manifest(out), params


def all_sources(image_folder: Path) -> list[str]:
    return sorted(p.relative_to(image_folder).as_posix() for p in image_folder.rglob("*.png"))


def test_file_backend_metadata_jsonl(prepared_folder):
    image_folder, out, manifest, prepare = prepared_folder
    lines = [json.dumps({"file_name": s, "text": f"  picture {s}  "}) for s in all_sources(image_folder)]
    (image_folder / "metadata.jsonl").write_text("\n".join(lines) + "\n\n")
    params = CaptionParams(backend="file", captions_file=str(image_folder))
    captioner = build_captioner(params, prepare)
    assert isinstance(captioner, FileCaptioner) and captioner.id == "file:metadata.jsonl"
    table = caption_manifest(manifest, out, captioner, params)
    train = [r for r in manifest.to_pylist() if r["split"] == "train"]
    assert table.num_rows == len(train) == 4
    for row, caption in zip(train, table["caption"].to_pylist()):
        assert caption == f"This is an image of {row['label']}. picture {row['source']}"


def test_file_backend_captions_csv_explicit_path(tmp_path, prepared_folder):
    image_folder, out, manifest, prepare = prepared_folder
    csv_path = tmp_path / "elsewhere" / "captions.csv"
    csv_path.parent.mkdir()
    rows = ["file_name,caption"] + [f'{s},"a, quoted caption for {s}"' for s in all_sources(image_folder)]
    csv_path.write_text("\n".join(rows) + "\n")
    params = CaptionParams(backend="file", captions_file=str(csv_path))
    table = caption_manifest(manifest, out, build_captioner(params, prepare), params)
    for source, caption in zip(
        [r["source"] for r in manifest.to_pylist() if r["split"] == "train"], table["caption"].to_pylist()
    ):
        assert caption.endswith(f". a, quoted caption for {source}")
    assert set(table["captioner"].to_pylist()) == {"file:captions.csv"}


def test_file_backend_finds_captions_csv_in_image_folder(prepared_folder):
    image_folder, _, _, prepare = prepared_folder
    (image_folder / "captions.csv").write_text("file_name,text\ncat/img00.png,hello\n")
    captioner = build_captioner(CaptionParams(backend="file", captions_file=str(image_folder)), prepare)
    assert captioner.describe([Image.new("RGB", (2, 2))], ["cat/img00.png"]) == ["hello"]


def test_missing_caption_row_names_the_file(prepared_folder):
    image_folder, out, manifest, prepare = prepared_folder
    sources = all_sources(image_folder)
    train_sources = {r["source"] for r in manifest.to_pylist() if r["split"] == "train"}
    dropped = sorted(train_sources)[0]
    lines = [json.dumps({"file_name": s, "text": "x"}) for s in sources if s != dropped]
    path = image_folder / "metadata.jsonl"
    path.write_text("\n".join(lines))
    params = CaptionParams(backend="file", captions_file=str(path))
    with pytest.raises(CaptionError) as info:
        caption_manifest(manifest, out, build_captioner(params, prepare), params)
    assert str(path) in str(info.value)
    assert dropped in str(info.value)


def test_caption_file_errors(tmp_path, prepared_folder):
    image_folder, _, _, prepare = prepared_folder
    elsewhere = tmp_path / "no captions here"
    elsewhere.mkdir()
    with pytest.raises(CaptionError, match="no metadata.jsonl or captions.csv") as info:
        build_captioner(CaptionParams(backend="file", captions_file=str(elsewhere)), prepare)
    assert str(info.value).startswith(str(elsewhere))
    (image_folder / "metadata.jsonl").write_text("")
    with pytest.raises(CaptionError, match=f"set caption.captions_file: {image_folder / 'metadata.jsonl'}"):
        build_captioner(CaptionParams(backend="file", captions_file=str(elsewhere)), prepare)
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(CaptionError, match="not found") as info:
        build_captioner(CaptionParams(backend="file", captions_file=str(missing)), prepare)
    assert str(missing) in str(info.value)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"file_name": "a.png", "text": "ok"}\n{not json\n')
    with pytest.raises(CaptionError, match=f"{broken}:2"):
        read_caption_file(broken)
    no_text = tmp_path / "no_text.csv"
    no_text.write_text("file_name,label\na.png,cat\n")
    with pytest.raises(CaptionError, match="file_name"):
        read_caption_file(no_text)


def test_unknown_backend():
    with pytest.raises(CaptionError, match="'gpt4'"):
        build_captioner(CaptionParams(backend="gpt4"), PrepareParams())


def test_no_training_images(digits_prepared):
    folder, manifest = digits_prepared
    val_only = manifest.filter(pc.not_equal(manifest["split"], "train"))
    assert val_only.num_rows > 0
    with pytest.raises(CaptionError, match="no training images"):
        caption_manifest(val_only, folder, AttributeCaptioner(), CaptionParams())


def test_caption_module_works_on_its_own(tmp_path):
    script = textwrap.dedent(f"""
        from pathlib import Path
        import pyarrow as pa
        from PIL import Image
        from mvcaug.method.caption import AttributeCaptioner
        from mvcaug.core.params import CaptionParams
        from tests.captions import caption_manifest
        folder = Path({str(tmp_path)!r})
        Image.new("L", (8, 8)).save(folder / "a.png")
        manifest = pa.table({{"id": ["a"], "path": ["a.png"], "label": ["x"], "split": ["train"],
                             "source": ["a.png"]}})
        print(caption_manifest(manifest, folder, AttributeCaptioner(), CaptionParams()).num_rows)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("1")


def test_a_caption_file_in_another_encoding_is_one_line_naming_the_file_and_line(tmp_path):
    latin1 = tmp_path / "metadata.jsonl"
    latin1.write_bytes('{"file_name": "a.png", "text": "ok"}\n{"file_name": "b.png", "text": "café"}\n'
                       .encode("latin-1"))
    with pytest.raises(CaptionError) as info:
        read_caption_file(latin1)
    assert str(info.value).startswith(f"{latin1}:2: not UTF-8 text") and "save the file as UTF-8" in str(info.value)
    utf16 = tmp_path / "captions.csv"
    utf16.write_text("file_name,text\na.png,ok\n", encoding="utf-16")
    with pytest.raises(CaptionError, match=f"{utf16}:1: not UTF-8 text"):
        read_caption_file(utf16)
    bom = tmp_path / "bom.csv"  # what Excel writes as "CSV UTF-8": read, the BOM is not part of the header
    bom.write_text("file_name,text\na.png,caf\u00e9\n", encoding="utf-8-sig")
    assert read_caption_file(bom) == {"a.png": "caf\u00e9"}


@pytest.mark.parametrize(("name", "content", "line", "says"), [
    ("metadata.jsonl", '{"file_name": "a.png", "text": "ok"}\n["b.png", "a list"]\n', 2, "expected an object"),
    ("metadata.jsonl", '{"file_name": "a.png", "text": "ok"}\n\n{"file_name": 3, "text": "x"}\n', 3, "as text"),
    ("metadata.jsonl", '{"file_name": "a.png", "label": "cat"}\n', 1, "'text' (or 'caption')"),
    ("captions.csv", "file_name,text\na.png,ok\nb.png,red, round\n", 3, "3 fields where the header has 2"),
    ("captions.csv", "file_name,text\na.png,ok\nb.png\n", 3, "1 fields where the header has 2"),
    ("captions.csv", "name,text\na.png,ok\n", 1, "header row must name the columns"),
])
def test_a_caption_row_of_the_wrong_shape_is_one_line_naming_the_row_and_the_columns(tmp_path, name, content, line,
                                                                                     says):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CaptionError) as info:
        read_caption_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ") and says in message and "\n" not in message


def test_editing_the_caption_file_makes_dvc_rerun_the_caption_stage(tmp_path):
    """Real `dvc status` on this project's dvc.yaml: the caption file (in the image folder, the default, or an
    explicit one elsewhere) is a dependency of the caption stage."""
    from tests.workspace import make_workspace, run, update_params

    workspace = make_workspace(tmp_path / "ws", {"caption": {"backend": "file"}})
    (workspace / "data/01_prepared").mkdir(parents=True)
    (workspace / "data/01_prepared/manifest.parquet").write_bytes(b"stands in for the prepared manifest")
    (workspace / "data/02_captions/captions.parquet").write_bytes(b"stands in for the captions")
    beside = workspace / "data/00_source/metadata.jsonl"
    elsewhere = workspace / "captions/mine.csv"
    elsewhere.parent.mkdir()
    elsewhere.write_text("file_name,text\na.png,a round shape\n")

    def caption_status() -> dict:
        return json.loads(run(["dvc", "status", "caption", "--json"], workspace).stdout)

    for captions_file, path, edited in [("data/00_source", beside, "a square shape"),
                                        ("captions/mine.csv", elsewhere, "a square shape")]:
        update_params(workspace, {"caption": {"captions_file": captions_file}})
        beside.write_text(json.dumps({"file_name": "a.png", "text": "a round shape"}) + "\n")
        run(["dvc", "commit", "--force", "caption"], workspace)  # records the stage as run, inputs as they are
        assert caption_status() == {}
        path.write_text(path.read_text().replace("a round shape", edited))
        changed = caption_status()["caption"][0]["changed deps"]
        assert changed == {captions_file: "modified"}
