"""End to end: `dvc repro` in a fresh git + DVC workspace with tiny params, then changes and reruns.

The module starts from one reproduced and committed workspace (tests.workspace.reproduced_base, which the fault
tests copy too under `make test`); every test that changes something, or runs DVC, works on its own copy
(tests.workspace.copy_workspace), so each test passes alone (`pytest -k name`) and in any order.
"""

from __future__ import annotations

import ast
import json
import re
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mvcaug.core.throughput import combined
from mvcaug.io.catalog import FILES
from mvcaug.io.embedding_table import read_embeddings
from mvcaug.io.stage_times import read_stage_times, stage_throughput
from tests.browser import browser  # noqa: F401  (a pytest fixture)
from tests.workspace import TINY_PARAMS, commit_all, copy_workspace, run, stages_ran, update_params

pytestmark = [pytest.mark.slow, pytest.mark.runtime(481)]  # seconds under `make test` at 18e8f52

ALL_STAGES = {"prepare", "caption", "embed", "pretrain", "mix", "finetune", "generate", "filter", "quality", "train",
              "replicates", "report"}
CLASSES = 10
SEEDS = len(TINY_PARAMS["train"]["seeds"])
PER_CLASS = TINY_PARAMS["generate"]["images_per_class"]  # 4: budgets 0.25, 0.5, 1.0 -> 1, 2 and the full 4
GRID = 5 * SEEDS  # real, combined, rsp, two_phase and its control (real only on the two-phase schedule)
UNMIXED = SEEDS  # combined on the unmixed (P = Q = 0) set
TABLE_4 = SEEDS  # combined on the pretrained model's own set (generate.compare_pretrained)
BUDGET = 2 * SEEDS  # combined on 1 and 2 images per class
MORE_REAL = 3 * SEEDS  # real only plus 1, 2 and 4 held-out real images per class
CORPUS = 3 * SEEDS  # real only plus 1, 2 and 4 pretraining-corpus images per class (the generator's training data)
CELLS = GRID + UNMIXED + TABLE_4 + BUDGET + MORE_REAL + CORPUS


@pytest.fixture(scope="module")
def base(reproduced: Path) -> Path:
    """The reproduced and committed workspace (tests.workspace.reproduced_base): read it, never change it (copy it
    first). Every stage ran in it, in this process."""
    return reproduced


@pytest.fixture
def workspace(base: Path, tmp_path: Path) -> Path:
    """This test's own copy of the reproduced workspace."""
    return copy_workspace(base, tmp_path / "ws")


def logged(output: str, label: str) -> dict:
    """The last summary dict a stage logged as '<label>: {...}'."""
    found = re.findall(rf"{re.escape(label)}: (\{{.*?\}})\s*$", output, flags=re.M)
    assert found, f"no '{label}' summary in:\n{output[-3000:]}"
    return ast.literal_eval(found[-1])


def test_every_artifact(base: Path) -> None:
    p = TINY_PARAMS
    manifest = pq.read_table(base / "data/01_prepared/manifest.parquet")
    splits = manifest["split"].to_pylist()
    assert splits.count("train") == CLASSES * p["prepare"]["train_per_class"]
    assert splits.count("test") == CLASSES * p["prepare"]["test_per_class"]
    assert splits.count("reference") == CLASSES * p["prepare"]["reference_per_class"]

    captions = pq.read_table(base / "data/02_captions/captions.parquet").to_pylist()
    assert len(captions) == CLASSES * p["prepare"]["train_per_class"]
    assert all(c["caption"].startswith(f"This is an image of {c['label']}.") for c in captions)

    caption_table, embeddings, info = read_embeddings(base / "data/03_embeddings/embeddings.parquet")
    assert embeddings.shape == (len(captions), 16, 384) and info["shape"] == [16, 384]
    mixed, _, _ = read_embeddings(base / "data/05_mixed/mixed.parquet")
    assert all(len(edits) == 1 + 8 for edits in mixed["edits"].to_pylist())  # P=1, Q=8 by default
    unmixed, unmixed_emb, unmixed_info = read_embeddings(base / "data/05_mixed/unmixed.parquet")
    assert (unmixed_info["coarse_steps"], unmixed_info["fine_steps"]) == (0, 0)
    caption_ids = caption_table["id"].to_pylist()
    for row, embedding in zip(unmixed.to_pylist(), unmixed_emb):
        assert np.array_equal(embedding, embeddings[caption_ids.index(row["start_id"])])

    model = base / "data/06_model"
    assert json.loads((model / "unet/config.json").read_text())["in_channels"] == 2
    assert json.loads((model / "metrics.json").read_text())["steps"] == p["finetune"]["steps"]

    synthetic = pq.read_table(base / "data/07_synthetic/manifest.parquet").to_pylist()
    assert len(synthetic) == CLASSES * PER_CLASS
    train_ids = {r["id"] for r in manifest.to_pylist() if r["split"] == "train"}
    assert all(s["cond_id"] in train_ids for s in synthetic)
    with Image.open(base / "data/07_synthetic" / synthetic[0]["path"]) as image:
        assert image.size == (16, 16) and image.mode == "L"
    unmixed_rows = pq.read_table(base / "data/07_synthetic_unmixed/manifest.parquet").to_pylist()
    assert unmixed_rows == synthetic  # same seeds, conditioning images and mix indices; only the text differs

    decisions = pq.read_table(base / "data/08_filter/mvc.parquet").to_pylist()
    assert [d["path"] for d in decisions] == [s["path"] for s in synthetic]
    assert {"kept", "reason", "confidence", "nearest_real_distance", "nearest_real_id"} <= set(decisions[0])
    # tiny params: filter.enabled false, so every image is kept; a reason is what the filter flags
    assert all(d["kept"] for d in decisions)
    assert {d["reason"] for d in decisions} <= {"", "low_confidence", "near_copy", "near_duplicate"}
    assert all(d["nearest_real_id"] in train_ids for d in decisions)
    assert (base / "data/08_filter/classifier/model.safetensors").is_file()

    results = json.loads((base / "data/10_train/results.json").read_text())
    assert len(results) == CELLS
    names = {"small_cnn-default-combined-unmixed-seed1", "small_cnn-default-combined-n1-seed0",
             "small_cnn-default-combined-n2-seed1", "small_cnn-default-two_phase-seed0"}
    assert names <= {p.name for p in (base / "data/10_train/cells").iterdir()}

    metrics = json.loads((base / "metrics.json").read_text())["small_cnn"]
    assert set(metrics) == {"baseline", "syn", "rsp", "two_phase", "real_two_phase", "syn_unmixed", "syn_pretrained", "syn_n1",
                            "syn_n2", "more_real_n1", "more_real_n2", "more_real_n4", "corpus_n1", "corpus_n2", "corpus_n4"}
    syn = metrics["syn"]
    by_cell = {(r["cell"]["strategy"], r["cell"]["synthetic_set"], r["cell"]["added_per_class"], r["cell"]["seed"]): r["test_acc"]
               for r in results}
    differences = [by_cell[("combined", "mvc", 0, s)] - by_cell[("real", "mvc", 0, s)] for s in TINY_PARAMS["train"]["seeds"]]
    spread = max(differences) - min(differences) > 1e-12  # seeds that all agree give no interval, by design
    assert "gain" in syn and ({"gain_ci_low", "gain_ci_high", "gain_p"} <= set(syn)) == spread, (syn, differences)
    assert "exchange_rate" in syn or syn["gain"] < 0  # a harmful set without a more_real slope has no rate
    quality = json.loads((base / "data/09_quality/metrics.json").read_text())
    assert {"fid", "kid_mean", "fidelity._all", "memorisation.within_rmse", "condition.text_change",
            "condition.image_change", "within_rmse_fraction.zero"} <= set(quality)
    html = (base / "data/12_report/report.html").read_text()
    assert html.index('<p class="verdict">') < html.index("<h2>")
    assert "Where the time went" in html and "What the filter flags (filter.enabled is false" in html
    # each stage's throughput, counted by its tasks in this run: the work the tiny params ask for, on the CPU
    times = read_stage_times(base / ".mvcaug-run" / FILES.stage_times)
    done = {stage: {m.what: m for m in combined(stage_throughput(entry))} for stage, entry in times.items()}
    trained = {stage: p[stage]["steps"] * p[stage]["batch_size"] for stage in ("pretrain", "finetune")}
    assert {stage: done[stage]["training samples"].count for stage in trained} == trained
    generated = sum(pq.read_metadata(base / f"data/{folder}/manifest.parquet").num_rows
                    for folder in ("07_synthetic", "07_synthetic_unmixed", "07_synthetic_pretrained"))
    assert done["generate"]["images"].count == generated == 3 * CLASSES * PER_CLASS
    assert done["train"]["classifier cells"].count == CELLS and done["train"]["epochs"].count >= 2 * CELLS
    assert {m.device for stage, measures in done.items() if stage != "train" for m in measures.values()} == {"cpu"}
    # the train stage's rate is one core's: a cell trains on one thread, in the stage's process or a worker's
    assert {m.device for m in done["train"].values()} == {"cpu, 1 thread a cell"}
    assert re.search(r"training samples/(s|min) on cpu", html) and re.search(r"classifier cells/(s|min) on cpu", html)
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    markdown = (base / "data/12_report/report.md").read_text()
    assert markdown.splitlines()[2].startswith("**") and "| small_cnn | default |" in markdown
    budget = sorted(p.name for p in (base / "data/12_report/budget").iterdir())
    assert budget == ["small_cnn-corpus.csv", "small_cnn-real.csv", "small_cnn-synthetic.csv"]
    assert (base / "data/12_report/budget/small_cnn-real.csv").read_text().splitlines()[0] == (
        "images_per_class,accuracy,low,high")


def test_noop_repro_runs_nothing(workspace: Path) -> None:
    result = run(["dvc", "repro"], workspace)
    assert stages_ran(result.stdout) == set()
    assert run(["dvc", "status"], workspace).stdout.strip().endswith("Data and pipelines are up to date.")


def test_a_mix_change_reruns_mix_and_after_only_and_commits_compare(workspace: Path) -> None:
    update_params(workspace, {"mix": {"fine_steps": 3}})
    result = run(["dvc", "repro"], workspace)
    assert stages_ran(result.stdout) == ALL_STAGES - {"prepare", "caption", "embed", "pretrain"}
    commit_all(workspace, "fewer fine mixing steps")
    params_diff = run(["dvc", "params", "diff", "HEAD~1", "HEAD"], workspace).stdout
    assert re.search(r"mix\.fine_steps\s+8\s+3", params_diff), params_diff
    metrics_diff = run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--all"], workspace).stdout
    # (gain_ci_low too, where the seeds disagree: the tiny classifiers often agree exactly, and then there is none)
    assert "small_cnn.syn.gain" in metrics_diff and "small_cnn.baseline.acc_mean" in metrics_diff
    assert "Syn, P = 1, Q = 3" in (workspace / "data/12_report/report.html").read_text()


def test_more_images_keep_finished_shards_and_cells(workspace: Path) -> None:
    shard_record = workspace / "data/07_synthetic/shard-zero-0000/shard.json"
    before = shard_record.stat().st_mtime_ns
    update_params(workspace, {"generate": {"images_per_class": 6}})
    result = run(["dvc", "repro"], workspace)
    output = result.stdout + result.stderr
    # (replicates reruns on any generate param: with generate.replicates 1 it only writes its summary)
    assert stages_ran(result.stdout) == {"generate", "filter", "quality", "train", "replicates", "report"}
    assert shard_record.stat().st_mtime_ns == before
    assert logged(output, "generate mvc") == {"shards": 30, "generated": 10, "kept": 20, "removed": 0, "images": 60}
    assert logged(output, "generate unmixed")["generated"] == 10
    # budgets 0.25, 0.5, 1.0 of 6: 2, 3 and 6; real-only cells, more_real cells and corpus cells at 2 keep their
    # results (they do not depend on synthetic images), as do two-phase's real-only controls; the more_real and
    # corpus cells at 3 and 6 are new
    assert logged(output, "train")["kept"] == SEEDS + SEEDS + SEEDS + SEEDS


def edit(workspace: Path, module: str, old: str, new: str) -> None:
    path = workspace / module
    text = path.read_text()
    assert old in text, f"{module} no longer holds {old!r}: update the test"
    path.write_text(text.replace(old, new, 1))


def test_a_code_change_recomputes_exactly_what_ran_that_code(workspace: Path) -> None:
    # 1. A change in the generation code (same images): DVC reruns generate, which must not keep its old
    #    shards (they are persisted). The shard records hold the new digest, so the later stages rerun,
    #    but the images came out the same and the cells (keyed by the images they train on) are all kept.
    edit(workspace, "mvcaug/method/generate.py", '"label": job.shard.label,', '"label": str(job.shard.label),')
    result = run(["dvc", "repro"], workspace)
    output = result.stdout + result.stderr
    assert stages_ran(result.stdout) == {"generate", "filter", "quality", "train", "replicates", "report"}
    assert logged(output, "generate mvc")["kept"] == 0 and logged(output, "generate unmixed")["kept"] == 0
    assert logged(output, "train")["trained"] == 0
    # 2. A change in a module no shard or cell runs: only its stage reruns, nothing is recomputed.
    edit(workspace, "mvcaug/reporting/report.py", "def loss_chart(", "def fine_tuning_loss_chart(")
    edit(workspace, "mvcaug/reporting/report.py", "_section(\"Denoiser fine-tuning loss\", loss_chart(",
         "_section(\"Denoiser fine-tuning loss\", fine_tuning_loss_chart(")
    result = run(["dvc", "repro"], workspace)
    assert stages_ran(result.stdout) == {"report"}


def test_the_pipeline_flow_reproduces_only_what_changed(workspace: Path) -> None:
    update_params(workspace, {"train": {"rsp_p": 0.5}})
    result = run(["python", "-m", "flows.pipeline"], workspace)
    output = result.stdout + result.stderr
    ran = re.search(r"ran: (\[.*?\]); skipped", output)  # train and replicates are independent: either order
    assert ran and set(ast.literal_eval(ran.group(1))) == {"train", "replicates", "report"}, output[-2000:]
    assert logged(output, "train")["trained"] == SEEDS  # only the RSP cells depend on rsp_p
    assert run(["dvc", "status"], workspace).stdout.strip().endswith("Data and pipelines are up to date.")


def test_ablation_off_empties_its_set_and_drops_its_cells(workspace: Path) -> None:
    update_params(workspace, {"generate": {"ablation": False}})
    result = run(["dvc", "repro"], workspace)
    # the MVC set is unchanged
    assert stages_ran(result.stdout) == {"generate", "filter", "train", "replicates", "report"}
    assert logged(result.stdout + result.stderr, "train")["trained"] == 0
    folder = workspace / "data/07_synthetic_unmixed"
    assert pq.read_table(folder / "manifest.parquet").num_rows == 0 and not list(folder.glob("shard-*"))
    assert not list((workspace / "data/10_train/cells").glob("*unmixed*"))
    assert "syn_unmixed" not in json.loads((workspace / "metrics.json").read_text())["small_cnn"]
    assert "MVC ablation" not in (workspace / "data/12_report/report.html").read_text()


def test_repeated_generators_nest_the_seeds_in_the_verdict(workspace: Path) -> None:
    update_params(workspace, {"generate": {"replicates": 2}})
    result = run(["dvc", "repro"], workspace)
    # the main run's generator is unchanged: generate reruns on its section's new key, keeps every shard, and no
    # later stage of the main run reruns
    assert stages_ran(result.stdout) == {"generate", "replicates", "report"}
    folder = workspace / "data/11_replicates"
    summary = json.loads((folder / "replicates.json").read_text())
    assert summary["generators"] == 2 and summary["seeds"][1] == {"generator": 1, "mix": 1, "finetune": 1, "generate": 1}
    # generator 1: its own mixes, model and synthetic set (the MVC set alone) and only the cells on that set
    assert (folder / "r1/model/unet/diffusion_pytorch_model.safetensors").is_file()
    assert pq.read_table(folder / "r1/synthetic/manifest.parquet").num_rows == CLASSES * PER_CLASS
    cells = {r["cell"]["strategy"] for r in json.loads((folder / "r1/train/results.json").read_text())}
    assert cells == {"combined", "rsp", "two_phase"}
    main = {r["cell"]["strategy"] for r in json.loads((workspace / "data/10_train/results.json").read_text())}
    assert {"real", "more_real", "corpus"} <= main  # the controls are the main run's, not repeated
    metrics = json.loads((workspace / "metrics.json").read_text())["small_cnn"]
    assert metrics["syn"]["generators"] == 2 and metrics["syn"]["runs"] == 2 * SEEDS
    assert "generators" not in metrics["baseline"]
    report = (workspace / "data/12_report/report.md").read_text()
    assert "the t-interval, 2 generators (fine-tuning, mixing and generation repeated with other seeds)" in report
    assert "gain of each generator (seeds + 0 to + 1)" in report and "gain_generator_1" in json.dumps(metrics["syn"])
    # back to one generator: its folder goes, the verdict is for one generator again
    update_params(workspace, {"generate": {"replicates": 1}})
    run(["dvc", "repro"], workspace)
    assert not (folder / "r1").exists()
    assert "generators" not in json.loads((workspace / "metrics.json").read_text())["small_cnn"]["syn"]


def api_post(api: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(f"{api}/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_every_stage_is_a_completed_flow_run_in_prefect(base: Path, prefect_server: str) -> None:
    # The server is shared by the whole session: other workspaces (copies with other params, other test
    # modules) post their own runs and versions of the same artifact keys, more than one page of them.
    # So ask per stage for a completed run, and look for this workspace's verdict among the versions.
    for stage in sorted(ALL_STAGES):
        runs = api_post(prefect_server, "flow_runs/filter", {
            "flows": {"name": {"any_": [stage]}},
            "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}, "limit": 1})
        assert runs, f"no completed flow run of {stage}"
    keys = ["mvcaug-metrics", "mvcaug-report"]
    artifacts = api_post(prefect_server, "artifacts/filter", {"artifacts": {"key": {"any_": keys}}})
    assert set(keys) <= {a["key"] for a in artifacts}
    verdict = (base / "data/12_report/report.md").read_text().splitlines()[2].strip("*")
    metrics_descriptions = [a["description"] for a in artifacts if a["key"] == "mvcaug-metrics"]
    assert verdict in metrics_descriptions  # the verdict opens the artifact too


EXP_COLUMNS = ["--drop", ".*", "--keep", r"Experiment|small_cnn\.(baseline|syn)\.(acc_mean|gain.*)|mix\.fine_steps"]
"""The README's `dvc exp show` view: the headline metrics and the params that differ."""


def test_the_dvc_experiment_workflow(workspace: Path) -> None:
    result = run(["dvc", "exp", "run", "-n", "no-fine-steps", "-S", "mix.fine_steps=0"], workspace)
    assert stages_ran(result.stdout) == ALL_STAGES - {"prepare", "caption", "embed", "pretrain"}
    # persisted outputs carry over: the real-only cells (two-phase's controls too), more_real cells and corpus
    # cells do not depend on the mixes
    assert logged(result.stdout + result.stderr, "train")["kept"] == SEEDS + SEEDS + MORE_REAL + CORPUS
    shown = json.loads(run(["dvc", "exp", "show", "--json"], workspace).stdout)
    experiments = {exp["name"]: exp for row in shown for exp in (row.get("experiments") or [])
                   for exp in [exp["revs"][0]]}
    data = experiments["no-fine-steps"]["data"]
    assert data["params"]["params.yaml"]["data"]["mix"]["fine_steps"] == 0
    assert "gain" in data["metrics"]["metrics.json"]["data"]["small_cnn"]["syn"]
    table = run(["dvc", "exp", "show", "--csv", *EXP_COLUMNS], workspace).stdout
    header = table.splitlines()[0].split(",")
    assert "small_cnn.syn.gain" in header and "mix.fine_steps" in header and len(header) < 20
    assert "no-fine-steps" in table
    diff = run(["dvc", "exp", "diff", "HEAD", "no-fine-steps"], workspace).stdout
    assert re.search(r"mix\.fine_steps\s+8\s+0", diff), diff


def test_the_report_reads_at_a_glance_in_a_browser(base: Path, browser) -> None:
    """Headless Chromium opens report.html offline: the verdict is the first thing on the page, and every
    section is there. The screenshot is kept for a person to look at (test-artifacts/report.png)."""
    from selenium.webdriver.common.by import By

    from tests.browser import ARTIFACTS

    browser.get((base / "data/12_report/report.html").as_uri())
    verdict = browser.find_element(By.CLASS_NAME, "verdict")
    first_heading = browser.find_element(By.TAG_NAME, "h2")
    assert verdict.is_displayed() and verdict.location["y"] < first_heading.location["y"]
    assert verdict.text == (base / "data/12_report/report.md").read_text().splitlines()[2].strip("*")
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    assert headings[:3] == ["How many images: synthetic vs real", "Training strategies: real only, combined, RSP, "
                            "two-phase", "Test accuracy (%) as in the paper (gain over the matching baseline)"]
    assert {"Quality of the synthetic images, per class", "What the filter flags (filter.enabled is false: every "
            "image is kept)", "Where the time went", "Real vs synthetic, per class"} <= set(headings)
    charts = browser.find_elements(By.TAG_NAME, "svg")
    assert charts and all(chart.size["width"] > 100 for chart in charts)
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images and all(browser.execute_script("return arguments[0].naturalWidth", im) > 0 for im in images)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1200, browser.execute_script("return document.body.scrollHeight") + 100)
    browser.save_screenshot(str(ARTIFACTS / "report.png"))
