"""End to end: scheduled regeneration (flows/regenerate.py, flows/ingest.py) in a git + DVC workspace.

One workspace for the module, with its own image folder (tracked with `dvc add`) and its own DVC
remote, reproduced and committed once; the tests run in order and each leaves it consistent:
no change -> nothing runs; new images -> the pipeline reruns and the results land on a regen/
branch and in the remote; two runs at once -> one regenerates, the other is turned away.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.prefect_server import stop
from tests.workspace import TINY_PARAMS, env, make_workspace, own_images, run, stages_ran

pytestmark = [pytest.mark.slow, pytest.mark.runtime(234)]  # seconds under `make test` at 18e8f52

DATASET = "data/00_source/set"
CLASSES = ("red", "blue")
PARAMS = own_images({
    **TINY_PARAMS,
    "prepare": {**TINY_PARAMS.get("prepare", {}), "source": "imagefolder", "image_folder": DATASET,
                "train_per_class": 3, "val_per_class": 1, "test_per_class": 1, "reference_per_class": 0},
    "train": {**TINY_PARAMS.get("train", {}), "seeds": [0]},
})


def write_images(folder: Path, indices: range, seed: int, classes: tuple[str, ...] = CLASSES) -> None:
    """16x16 PNGs of a random Gaussian blob: red ones upper left, blue ones lower right."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:16, 0:16]
    for label in classes:
        (folder / label).mkdir(parents=True, exist_ok=True)
        corner = 4 if label == "red" else 11
        for i in indices:
            cy, cx = corner + rng.integers(-2, 3, size=2)
            blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * rng.uniform(1.5, 3.5) ** 2))
            value = np.clip(255 * (blob + rng.normal(0, 0.05, blob.shape)), 0, 255).astype(np.uint8)
            zero = np.zeros_like(value)
            pixels = np.stack([value, zero, zero] if label == "red" else [zero, zero, value], axis=-1)
            Image.fromarray(pixels).save(folder / label / f"img{i:02d}.png")


def git(workspace: Path, *args: str) -> str:
    return run(["git", *args], workspace).stdout.strip()


def regen_branches(workspace: Path) -> list[str]:
    return git(workspace, "branch", "--list", "--format=%(refname:short)", "regen/*").split()


def latest_artifact(key: str) -> dict | None:
    """The latest artifact under key on the Prefect server the e2e session runs (tests/e2e/conftest.py)."""
    api = os.environ["PREFECT_API_URL"]
    request = urllib.request.Request(
        f"{api}/artifacts/latest/filter", method="POST", headers={"content-type": "application/json"},
        data=json.dumps({"artifacts": {"key": {"any_": [key]}}}).encode(),
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        found = json.loads(response.read())
    return found[0] if found else None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = make_workspace(tmp_path_factory.mktemp("regen-ws"), PARAMS)
    write_images(ws / DATASET, range(6), seed=0)
    run(["dvc", "add", DATASET], ws)
    # The project's default remote is ../../mvcaug-dvc-storage; point this workspace at its own.
    run(["dvc", "remote", "modify", "--local", "local", "url", str(tmp_path_factory.mktemp("remote"))], ws)
    result = run(["dvc", "repro"], ws)
    assert {"prepare", "report"} <= stages_ran(result.stdout), result.stdout
    git(ws, "add", "-A")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "dataset and first run")
    return ws


def test_unchanged_returns_early(workspace: Path) -> None:
    result = run(["python", "-m", "flows.regenerate"], workspace)
    output = result.stdout + result.stderr
    assert "nothing changed since the last run" in output, output[-3000:]
    assert "reproducing the pipeline" not in output
    assert regen_branches(workspace) == []


def test_new_data_regenerates_on_a_branch(workspace: Path, tmp_path: Path) -> None:
    before = git(workspace, "rev-parse", "HEAD")
    incoming = tmp_path / "incoming"
    write_images(incoming, range(6, 8), seed=1)
    shutil.copyfile(workspace / DATASET / "red/img00.png", incoming / "red/same-content.png")
    ingest = run(["python", "-m", "flows.ingest", str(incoming)], workspace)
    assert ingest.stdout == ""  # it logs, prints nothing
    assert "ingested 4 new images" in ingest.stderr, ingest.stderr[-3000:]
    assert "same-content.png: already in the dataset" in ingest.stderr
    assert "emitted mvcaug.data.arrived for mvcaug.dataset.set (4 new files)" in ingest.stderr
    for label in CLASSES:
        assert len(list((workspace / DATASET / label).glob("*.png"))) == 8

    result = run(["python", "-m", "flows.regenerate"], workspace)
    output = result.stdout + result.stderr

    # a commit on a new regen/ branch from the previous HEAD; the workspace stays on it
    branch = git(workspace, "rev-parse", "--abbrev-ref", "HEAD")
    assert regen_branches(workspace) == [branch] and branch.startswith("regen/"), output[-3000:]
    assert git(workspace, "rev-parse", "HEAD~1") == before
    subject = git(workspace, "log", "-1", "--format=%s")
    ran = subject.removeprefix("Regenerate: ").split(", ")
    assert ran[0] == "prepare" and {"train", "report"} <= set(ran), subject
    committed = set(git(workspace, "diff", "--name-only", before, "HEAD").split())
    assert {"dvc.lock", f"{DATASET}.dvc"} <= committed, committed
    assert git(workspace, "status", "--porcelain", "--", "dvc.lock", "metrics.json", "params.yaml", "data") == ""
    assert git(workspace, "show", "HEAD:metrics.json") == (workspace / "metrics.json").read_text().strip()
    assert run(["dvc", "status"], workspace).stdout.strip().endswith("Data and pipelines are up to date.")

    # the remote holds every output: in sync, and a pull after losing outputs and cache restores them
    assert "in sync" in run(["dvc", "status", "-c"], workspace).stdout
    shutil.rmtree(workspace / "data/12_report")
    shutil.rmtree(workspace / ".dvc/cache")
    run(["dvc", "pull"], workspace)
    assert (workspace / "data/12_report/report.html").is_file()
    assert run(["dvc", "status"], workspace).stdout.strip().endswith("Data and pipelines are up to date.")

    artifact = latest_artifact("regen-metrics-diff")  # the e2e session's server received it
    assert artifact is not None and branch in artifact["data"] and before[:8] in artifact["description"]


def test_concurrent_runs_one_regenerates_other_busy(workspace: Path) -> None:
    before = git(workspace, "rev-parse", "HEAD")
    write_images(workspace / DATASET, range(8, 9), seed=2, classes=("blue",))
    runs = [subprocess.Popen([sys.executable, "-m", "flows.regenerate"], cwd=workspace, env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = []
    for process in runs:
        stdout, stderr = process.communicate(timeout=1200)
        outputs.append(stdout + stderr)
        assert process.returncode == 0, (stdout + stderr)[-3000:]
    regenerated = [o for o in outputs if "regenerated on branch regen/" in o]
    busy = [o for o in outputs if "another regeneration is running" in o]
    assert len(regenerated) == 1 and len(busy) == 1, [o[-2000:] for o in outputs]
    assert "stale:" not in busy[0]  # turned away before looking at anything
    assert len(regen_branches(workspace)) == 2
    assert git(workspace, "rev-parse", "HEAD~1") == before  # branched from the previous regeneration
    assert git(workspace, "log", "-1", "--format=%s").startswith("Regenerate: prepare")


def test_served_deployment_has_the_schedule_and_runs_on_the_data_event(
    workspace: Path, tmp_path: Path, prefect_server: str
) -> None:
    """`--serve` registers the cron schedule from params.yaml; the data event starts a run of it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.ingest import announce_arrival

    served_log = tmp_path / "serve.log"
    server = subprocess.Popen([sys.executable, "-m", "flows.regenerate", "--serve"], cwd=workspace, env=env(),
                              stdout=served_log.open("w"), stderr=subprocess.STDOUT)
    # Prefect reads its settings when first imported (at collection, before the session's server
    # exists): point this process's client and event emitter at that server explicitly.
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
            deployment = wait_for(lambda: _deployment(client), 120, "the served deployment", server, served_log)
            crons = [getattr(s.schedule, "cron", None) for s in deployment.schedules]
            assert crons == [PARAMS.get("regenerate", {}).get("cron", "0 3 * * *")]
            assert wait_for(lambda: [a for a in client.read_automations() if "regenerate-on-new-data" in a.name],
                            60, "the trigger's automation", server, served_log)

            def deployment_runs() -> list:
                return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))

            def triggered_runs() -> list:
                """The runs something started: the server's scheduler service also creates the cron's next
                runs ahead of time (auto_scheduled, Scheduled for a later time) whenever its loop comes round."""
                return [r for r in deployment_runs() if not r.auto_scheduled]

            assert triggered_runs() == []
            now = datetime.now(timezone.utc)
            assert all(r.state.is_scheduled() and r.expected_start_time > now  # the cron's runs wait their time
                       for r in deployment_runs() if r.auto_scheduled)
            finished = None
            for _attempt in range(6):  # the server's trigger service loads new automations every few seconds
                announce_arrival(str(workspace / DATASET), {"blue": 1})
                finished = wait_for(lambda: [r for r in triggered_runs() if r.state and r.state.is_final()],
                                    20, "a triggered run", server, served_log, required=False)
                if finished:
                    break
            assert finished, "the data event did not start a run of the deployment"
            run_ = finished[0]
            assert run_.state.is_completed(), run_.state

            def said_unchanged() -> bool:  # the runner ships its logs in batches, after the state
                logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_.id])))
                return any("nothing changed since the last run" in log.message for log in logs)

            assert wait_for(said_unchanged, 30, "the run's 'nothing changed' log", server, served_log)
    finally:
        stop(server, grace_s=30)


def _deployment(client):
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name("regenerate/regenerate")
    except ObjectNotFound:
        return None


def wait_for(probe, seconds: float, what: str, process: subprocess.Popen, log: Path, required: bool = True):
    """Poll probe() until it returns something truthy; fail when the served process dies first."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if process.poll() is not None:
            raise AssertionError(f"`--serve` exited ({process.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(2)
    if required:
        raise AssertionError(f"no {what} after {seconds:.0f} s")
    return None
