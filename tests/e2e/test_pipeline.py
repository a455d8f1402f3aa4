"""End to end: `dvc repro` in a fresh git + DVC workspace, with tiny params, then incremental reruns."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mvcaug.embedding_table import read_embeddings
from tests.workspace import TINY_PARAMS, make_workspace, run, stages_ran, update_params

pytestmark = pytest.mark.slow

ALL_STAGES = {"prepare", "caption", "embed", "mix", "finetune", "generate", "quality", "train", "report"}
CELLS = 4 * 2 + 2  # strategies (real, combined, rsp, two_phase) x seeds, + the MVC ablation's combined x seeds
CLASSES = 10


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = make_workspace(tmp_path_factory.mktemp("ws"))
    result = run(["dvc", "repro"], ws)
    assert stages_ran(result.stdout) == ALL_STAGES, result.stdout
    return ws


def test_every_artifact(workspace: Path) -> None:
    p = TINY_PARAMS
    manifest = pq.read_table(workspace / "data/01_prepared/manifest.parquet")
    assert {"id", "path", "label", "split", "sha256", "width", "height"} <= set(manifest.column_names)
    splits = manifest["split"].to_pylist()
    assert splits.count("train") == CLASSES * p["prepare"]["train_per_class"]
    assert splits.count("test") == CLASSES * p["prepare"]["test_per_class"]

    captions = pq.read_table(workspace / "data/02_captions/captions.parquet").to_pylist()
    assert len(captions) == CLASSES * p["prepare"]["train_per_class"]
    assert all(c["caption"].startswith(f"This is an image of {c['label']}.") for c in captions)

    caption_table, embeddings, info = read_embeddings(workspace / "data/03_embeddings/embeddings.parquet")
    assert embeddings.shape == (len(captions), 16, 384) and info["shape"] == [16, 384]
    _, null, _ = read_embeddings(workspace / "data/03_embeddings/null.parquet")
    assert null.shape == (1, 16, 384)

    mixed, mixed_emb, _ = read_embeddings(workspace / "data/04_mixed/mixed.parquet")
    assert mixed_emb.shape == (CLASSES * p["mix"]["per_class"], 16, 384)
    assert all(len(edits) == 1 + 8 for edits in mixed["edits"].to_pylist())  # P=1, Q=8 by default
    # the MVC ablation's table: P = Q = 0, so each row is the unedited start caption embedding of MVC's row
    unmixed, unmixed_emb, unmixed_info = read_embeddings(workspace / "data/04_mixed/mixed_ablation.parquet")
    assert (unmixed_info["coarse_steps"], unmixed_info["fine_steps"]) == (0, 0)
    assert unmixed["start_id"].to_pylist() == mixed["start_id"].to_pylist()
    assert all(edits == [] for edits in unmixed["edits"].to_pylist())
    caption_ids = caption_table["id"].to_pylist()
    for row, embedding in zip(unmixed.to_pylist(), unmixed_emb):
        assert np.array_equal(embedding, embeddings[caption_ids.index(row["start_id"])])

    model = workspace / "data/05_model"
    assert (model / "unet/diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((model / "unet/config.json").read_text())["in_channels"] == 2
    assert json.loads((model / "metrics.json").read_text())["steps"] == p["finetune"]["steps"]

    synthetic = pq.read_table(workspace / "data/06_synthetic/manifest.parquet").to_pylist()
    assert len(synthetic) == CLASSES * p["generate"]["images_per_class"]
    assert {"path", "label", "shard", "seed", "mixed_id", "cond_id"} <= set(synthetic[0])
    train_ids = {r["id"] for r in manifest.to_pylist() if r["split"] == "train"}
    assert all(s["cond_id"] in train_ids for s in synthetic)
    with Image.open(workspace / "data/06_synthetic" / synthetic[0]["path"]) as image:
        assert image.size == (16, 16) and image.mode == "L"
    # the ablation set pairs with the MVC set image for image: same seeds, conditioning images, mix indices
    ablation = pq.read_table(workspace / "data/06_synthetic_ablation/manifest.parquet").to_pylist()
    assert ablation == synthetic
    assert all((workspace / "data/06_synthetic_ablation" / a["path"]).is_file() for a in ablation)
    pixels = [[np.asarray(Image.open(workspace / folder / s["path"])) for s in synthetic]
              for folder in ("data/06_synthetic", "data/06_synthetic_ablation")]
    assert any(not np.array_equal(a, b) for a, b in zip(*pixels))  # only the text condition differs

    results = json.loads((workspace / "data/07_train/results.json").read_text())
    assert len(results) == CELLS
    assert (workspace / "data/07_train/cells/small_cnn-default-real-seed0/metrics.json").is_file()  # dvclive
    assert sum(r["synthetic_set"] == "no_mvc" for r in results) == 2
    assert (workspace / "data/07_train/cells/small_cnn-default-combined-no_mvc-seed1/result.json").is_file()

    metrics = json.loads((workspace / "metrics.json").read_text())
    assert set(metrics) == {"small_cnn"}
    assert set(metrics["small_cnn"]) == {"baseline", "syn", "rsp", "two_phase", "syn_no_mvc"}
    assert "gain" in metrics["small_cnn"]["syn_no_mvc"]
    assert 0.0 <= metrics["small_cnn"]["baseline"]["acc_mean"] <= 1.0
    assert "gain" in metrics["small_cnn"]["syn"]
    quality = json.loads((workspace / "data/09_quality/metrics.json").read_text())
    assert {"fid", "kid_mean", "fidelity._all", "memorisation.near_copies"} <= set(quality)
    html = (workspace / "data/08_report/report.html").read_text()
    assert "Test accuracy" in html and html.count("data:image/png;base64,") >= CLASSES * 3
    assert "<th>Baseline</th><th>Syn</th>" in html and "Quality of the synthetic set" in html
    assert "MVC ablation" in html and "<th>Syn, P = Q = 0</th><th>Syn, P = 1, Q = 8</th>" in html
    markdown = (workspace / "data/08_report/report.md").read_text()
    assert "| small_cnn |" in markdown and "| small_cnn | default |" in markdown.split("MVC ablation")[1]
    assert "http://" not in html and "https://" not in html  # readable offline


def test_noop_repro_runs_nothing(workspace: Path) -> None:
    result = run(["dvc", "repro"], workspace)
    assert stages_ran(result.stdout) == set()
    assert run(["dvc", "status"], workspace).stdout.strip().endswith("Data and pipelines are up to date.")


def commit(workspace: Path, message: str) -> None:
    run(["git", "add", "-A"], workspace)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], workspace)


def test_mix_change_reruns_mix_and_after_only(workspace: Path) -> None:
    commit(workspace, "first run")
    update_params(workspace, {"mix": {"fine_steps": 3}})
    result = run(["dvc", "repro"], workspace)
    assert stages_ran(result.stdout) == {"mix", "finetune", "generate", "quality", "train", "report"}
    for stage in ("prepare", "caption", "embed"):
        assert f"Stage '{stage}' didn't change, skipping" in result.stdout
    # Comparing with the committed run: what changed in params, and what that did to the metrics.
    commit(workspace, "fewer fine mixing steps")
    params_diff = run(["dvc", "params", "diff", "HEAD~1", "HEAD"], workspace).stdout
    assert "mix.fine_steps" in params_diff and "8" in params_diff and "3" in params_diff
    metrics_diff = run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--all"], workspace).stdout
    assert "small_cnn.syn.acc_mean" in metrics_diff and "small_cnn.baseline.acc_mean" in metrics_diff
    assert "small_cnn.syn_no_mvc.acc_mean" in metrics_diff
    assert "Syn, P = 1, Q = 3" in (workspace / "data/08_report/report.html").read_text()
    assert "fid" in run(["dvc", "metrics", "diff", "HEAD~1", "HEAD"], workspace).stdout  # a changed one


def test_more_images_keeps_finished_shards(workspace: Path) -> None:
    shard_record = workspace / "data/06_synthetic/shard-zero-0000/shard.json"
    before = shard_record.stat().st_mtime_ns
    update_params(workspace, {"generate": {"images_per_class": 6}})
    result = run(["dvc", "repro"], workspace)
    assert stages_ran(result.stdout) == {"generate", "quality", "train", "report"}
    assert shard_record.stat().st_mtime_ns == before
    output = result.stdout + result.stderr
    assert "generate: {'shards': 30, 'generated': 10, 'kept': 20" in output
    assert "generate, MVC ablation (P = Q = 0): {'shards': 30, 'generated': 10, 'kept': 20" in output
    assert "'trained': 8, 'kept': 2" in output  # real-only cells do not depend on synthetic images
    for folder in ("data/06_synthetic", "data/06_synthetic_ablation"):
        synthetic = pq.read_table(workspace / folder / "manifest.parquet")
        assert synthetic.num_rows == CLASSES * 6
        assert len(set(synthetic["path"].to_pylist())) == synthetic.num_rows


def test_pipeline_flow_matches_dvc_repro(workspace: Path) -> None:
    update_params(workspace, {"train": {"rsp_p": 0.5}})
    result = run(["python", "-m", "flows.pipeline"], workspace)
    output = result.stdout + result.stderr
    assert "ran: ['train', 'report']" in output
    assert "'trained': 2, 'kept': 8" in output  # only the RSP cells depend on rsp_p
    assert run(["dvc", "status"], workspace).stdout.strip().endswith("Data and pipelines are up to date.")
    assert stages_ran(run(["dvc", "repro"], workspace).stdout) == set()


def test_ablation_off_empties_its_set_and_drops_its_cells(workspace: Path) -> None:
    update_params(workspace, {"generate": {"ablation": False}})
    result = run(["dvc", "repro"], workspace)
    assert stages_ran(result.stdout) == {"generate", "train", "report"}  # the MVC set is unchanged: no quality
    assert "'trained': 0, 'kept': 8" in result.stdout + result.stderr
    folder = workspace / "data/06_synthetic_ablation"
    assert pq.read_table(folder / "manifest.parquet").num_rows == 0 and not list(folder.glob("shard-*"))
    assert not list((workspace / "data/07_train/cells").glob("*no_mvc*"))
    assert "syn_no_mvc" not in json.loads((workspace / "metrics.json").read_text())["small_cnn"]
    assert "MVC ablation" not in (workspace / "data/08_report/report.html").read_text()


def api_post(api: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(f"{api}/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_every_stage_is_a_completed_flow_run_in_prefect(workspace: Path, prefect_server: str) -> None:
    flows = {f["id"]: f["name"] for f in api_post(prefect_server, "flows/filter", {})}
    runs = api_post(prefect_server, "flow_runs/filter", {"limit": 200})
    completed = {flows[r["flow_id"]] for r in runs if r["state_type"] == "COMPLETED"}
    assert ALL_STAGES <= completed
    artifacts = {a["key"] for a in api_post(prefect_server, "artifacts/filter", {}) if a.get("key")}
    assert {"mvcaug-metrics", "mvcaug-report"} <= artifacts
