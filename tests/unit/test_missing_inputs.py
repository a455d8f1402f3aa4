"""A stage started before an earlier stage wrote its input: one `error:` line naming the missing file and the
stage that writes it, whichever library (pyarrow, PIL, open) found it missing."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import error_line, missing_input
from mvcaug.judging.cells import Cell
from mvcaug.io.embedding_table import read_embeddings
from mvcaug.io.images import read_image
from mvcaug.core.params import PrepareParams
from mvcaug.io.params_file import load_params
from tasks.prepare import prepare_dataset
from tests.workspace import env, make_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of this project (its dvc.yaml says which stage writes what) with a tiny prepared digits split."""
    root = make_workspace(tmp_path_factory.mktemp("missing") / "ws")
    prepare_dataset(PrepareParams(train_per_class=2, val_per_class=1, test_per_class=1, resolution=8),
                    root / "data/01_prepared")
    return root


def raised(read) -> FileNotFoundError:
    """The FileNotFoundError that `read()` raises, as the library raises it."""
    with pytest.raises(FileNotFoundError) as info:
        read()
    return info.value


@pytest.mark.parametrize(("read", "stage", "named"), [
    (lambda: pq.read_table("data/02_captions/captions.parquet"), "caption", "data/02_captions/captions.parquet"),
    (lambda: read_embeddings("data/03_embeddings/embeddings.parquet"), "embed", "embeddings.parquet"),
    (lambda: read_image("data/07_synthetic/shard-zero-0000/zero-00000.png"), "generate", "zero-00000.png"),
    (lambda: open("data/10_train/results.json"), "train", "data/10_train/results.json"),
    (lambda: read_image("data/01_prepared/images/train/zero/gone.png"), "prepare", "gone.png"),
])
def test_a_missing_file_of_an_earlier_stage_names_the_file_and_that_stage(workspace, monkeypatch, read, stage, named):
    monkeypatch.chdir(workspace)
    error = missing_input(raised(read), running="report")
    assert error is not None
    message = str(error)
    assert named in message.split(": not found")[0]
    assert f"the '{stage}' stage writes it" in message and "dvc" not in message and error.stage == stage
    line = error_line(error)  # what the command line prints: the command that runs that stage
    assert line == f"error: {message} (dvc repro {stage})" and "\n" not in line


def test_a_domain_reader_names_the_stage_and_the_command_line_says_how_to_run_it(tmp_path):
    """The domain's message names the missing file and the stage that writes it, not the tool; the one line the
    user sees adds the command (the same line as before the domain stopped naming dvc). A Dask worker's error
    reaches the flow pickled: the stage travels with it."""
    from mvcaug.core.errors import MissingInputError
    from mvcaug.io.catalog import FILES
    from mvcaug.io.images import read_manifest

    with pytest.raises(MissingInputError) as info:
        read_manifest(tmp_path)
    assert info.value.stage == "prepare" and "dvc" not in str(info.value)
    assert error_line(info.value) == (f"error: {tmp_path / FILES.manifest}: no dataset manifest; run the prepare stage "
                                      "first (dvc repro prepare)")
    assert error_line(pickle.loads(pickle.dumps(info.value))) == error_line(info.value)
    assert error_line(MissingInputError("x: gone")) == "error: x: gone"  # no stage: the message alone


def test_a_missing_file_no_stage_writes_stays_a_bug(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    assert missing_input(raised(lambda: open("mvcaug/no_such_module.py")), running="report") is None
    assert missing_input(FileNotFoundError(), running="report") is None


def test_a_file_the_running_stage_lost_from_its_own_output_stays_a_bug(workspace, monkeypatch):
    """Not "run prepare first" from prepare itself: its own staging file vanishing is a bug to see in full."""
    monkeypatch.chdir(workspace)
    lost = raised(lambda: read_image("data/01_prepared/images/train/zero/gone.png"))
    assert missing_input(lost, running="prepare") is None
    assert missing_input(lost, running="caption") is not None  # a later stage: prepare's output is its input


def test_train_after_generate_output_was_removed_names_generate(workspace, monkeypatch):
    """The filter's decisions name synthetic images that are not there (generate never ran in this copy, or its
    output was removed): the train stage's loader meets a raw PIL error, reported as generate's missing file."""
    from tasks.train import read_training_data

    monkeypatch.chdir(workspace)
    params = load_params("params.yaml")
    kept = [{"path": "shard-zero-0000/zero-00000.png", "label": "zero", "kept": True, "reason": ""}]
    Path(params.paths.filter).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(kept), Path(params.paths.filter) / "mvc.parquet")
    try:
        error = missing_input(raised(lambda: read_training_data(params, [Cell("small_cnn", "default", "combined", 0)])),
                              running="train")
    finally:
        (Path(params.paths.filter) / "mvc.parquet").unlink()
    assert error is not None
    assert str(error).startswith(f"{params.paths.synthetic}/shard-zero-0000/zero-00000.png: not found; the 'generate' "
                                 "stage writes it")


def test_caption_started_before_prepare_finished_is_one_error_line(workspace):
    """The real command line: the manifest is there but an image it names is not (an earlier prepare was cut
    short, or the folder was edited): one line, no traceback, exit 1."""
    manifest = pq.read_table(workspace / "data/01_prepared/manifest.parquet").to_pylist()
    image = workspace / "data/01_prepared" / next(row["path"] for row in manifest if row["split"] == "train")
    kept = image.read_bytes()
    image.unlink()
    try:
        done = subprocess.run([sys.executable, "-m", "flows.caption"], cwd=workspace, env=env(), capture_output=True,
                              text=True, timeout=120)
    finally:
        image.write_bytes(kept)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and image.name in last and "the 'prepare' stage writes it" in last, last
