"""Bad input and faults, through the real stage commands: what the user sees, and that nothing is lost,
duplicated or left running. Each test backs a row of the README's "What happens when ..." table."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.workspace import (
    OWN_IMAGES, TINY_PARAMS, copy_workspace, env, run, update_params,
)

pytestmark = [pytest.mark.slow, pytest.mark.runtime(139)]  # seconds under `make test` at 18e8f52

EXIT_BOUND_S = 20.0
"""Ctrl-C and parent deaths must end a stage within this (the probe measured 145-151 s before)."""


@pytest.fixture
def workspace(mixed: Path, tmp_path: Path) -> Path:
    """A copy of the tiny workspace up to mix and pretrain."""
    return copy_workspace(mixed, tmp_path / "ws")


@pytest.fixture
def finished_workspace(reproduced: Path, tmp_path: Path) -> Path:
    """A copy of the tiny workspace with every stage run (a fine-tuned model included)."""
    return copy_workspace(reproduced, tmp_path / "ws")


def own_server_env() -> dict[str, str]:
    """The test environment without the session's Prefect server: the stage starts its own."""
    return {k: v for k, v in env().items() if k != "PREFECT_API_URL"}


def as_in_a_terminal() -> None:
    """Ctrl-C's default action, as a shell gives a foreground command. A suite started as a background job
    (`make test &`, nohup) hands its children SIGINT ignored, and a stage rightly keeps ignoring it then."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


Launcher = Callable[..., subprocess.Popen]


@pytest.fixture
def stage() -> Iterator[Launcher]:
    """Starts a stage command in its own process group (as a terminal runs it), output to files; whatever
    is still running at the end of the test is killed, so a failed test leaves no stage busy on the CPUs."""
    started_groups: list[int] = []

    def start(args: list[str], cwd: Path, environment: dict[str, str] | None = None) -> subprocess.Popen:
        process = subprocess.Popen(args, cwd=cwd, env=environment or env(), start_new_session=True,
                                   preexec_fn=as_in_a_terminal, stdout=(cwd / "stage.out").open("w"),
                                   stderr=(cwd / "stage.err").open("w"), text=True)
        started_groups.append(process.pid)
        return process

    yield start
    for group in started_groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def started(cwd: Path, stage_name: str) -> bool:
    """Whether the stage's flow has begun (its log file says so; the stage then loads and trains for long)."""
    log = cwd / ".mvcaug-run" / "logs" / f"{stage_name}.log"
    return log.is_file() and "Beginning flow run" in log.read_text()


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error line of a user error, after checking that it is the only thing said about it."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr and "Failed" not in result.stderr, result.stderr
    return errors[0]


def tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# --- user errors: one line, the traceback in the stage's log file ---------------------------------------


def test_a_user_error_is_one_line_with_the_traceback_in_the_log_file(workspace: Path) -> None:
    update_params(workspace, {"prepare": {"source": "imagefolder", "image_folder": "no/such/folder"}, **OWN_IMAGES})
    error = one_line_error(run(["python", "-m", "flows.prepare"], workspace, check=False))
    assert error == ("error: image folder 'no/such/folder' does not exist; set prepare.image_folder to a folder of "
                     "class subfolders")
    log = (workspace / ".mvcaug-run/logs/prepare.log").read_text()
    assert "Traceback" in log and "DatasetError" in log
    debug = run(["python", "-m", "flows.prepare", "--debug"], workspace, check=False)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_a_bug_keeps_its_traceback(workspace: Path) -> None:
    (workspace / "data/02_captions/captions.parquet").write_bytes(b"not parquet")  # no user could cause this
    result = run(["python", "-m", "flows.embed"], workspace, check=False)
    assert result.returncode != 0 and "Traceback" in result.stderr and "error: " not in result.stderr


@pytest.mark.parametrize(("changes", "message"), [
    ({"train": {"seeds": []}}, "error: params.yaml: 'train.seeds' is empty; list at least one seed"),
    ({"train": {"seeds": [0, -1]}}, "error: params.yaml: 'train.seeds' must be distinct integers >= 0"),
])
def test_bad_seeds_stop_the_train_stage_and_keep_its_cells(workspace: Path, changes, message) -> None:
    kept = workspace / "data/10_train/cells/small_cnn-default-real-seed0"
    kept.mkdir(parents=True)
    (kept / "result.json").write_text("{}")
    update_params(workspace, changes)
    assert one_line_error(run(["python", "-m", "flows.train"], workspace, check=False)).startswith(message)
    assert (kept / "result.json").is_file()  # nothing was deleted


def test_an_unknown_classifier_is_one_line(workspace: Path) -> None:
    # workers 2: the failing flow leaves a pool of worker processes at once (it once hung there waiting on them)
    update_params(workspace, {"train": {"models": ["no_such_net"], "strategies": ["real"], "synthetic_budgets": [],
                                        "model_settings": {"no_such_net": {"epochs": 2}}, "workers": 2},
                              "generate": {"ablation": False}})
    error = one_line_error(run(["python", "-m", "flows.train"], workspace, check=False))
    assert error.startswith("error: train.models: unknown classifier 'no_such_net'")


def test_a_missing_local_encoder_is_named_and_never_sent_to_the_hub(workspace: Path) -> None:
    update_params(workspace, {"embed": {"encoder": "models/no/encoder"}})
    error = one_line_error(run(["python", "-m", "flows.embed"], workspace, check=False))
    assert error.startswith("error: embed.encoder 'models/no/encoder' is not a folder") and "Repo id" not in error


# --- faults: interrupts, killed parents, two writers, a failed rerun --------------------------------------


@pytest.mark.serial  # a bound in seconds: run alone, after the parallel part of `make test`
@pytest.mark.parametrize("what", ["finetune", "generate"])
def test_ctrl_c_ends_a_stage_within_seconds(what: str, stage: Launcher, request: pytest.FixtureRequest) -> None:
    if what == "generate":  # it needs a fine-tuned model
        workspace = request.getfixturevalue("finished_workspace")
        update_params(workspace, {"generate": {"steps": 1000}})  # minutes of sampling
    else:
        workspace = request.getfixturevalue("workspace")
        update_params(workspace, {"finetune": {"steps": 100000}})
    (workspace / ".mvcaug-run" / "logs" / f"{what}.log").unlink(missing_ok=True)  # started() reads this run's
    process = stage(["python", "-m", f"flows.{what}"], workspace, own_server_env())
    wait_for(lambda: started(workspace, what), 120, f"{what} to start")
    time.sleep(3)
    start = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    process.wait(timeout=120)
    seconds = time.monotonic() - start
    assert seconds < EXIT_BOUND_S, f"{what} took {seconds:.1f} s to exit after Ctrl-C"
    assert process.returncode != 0 and "interrupted" in (workspace / "stage.err").read_text()
    print(f"{what}: exited {seconds:.1f} s after Ctrl-C")


def children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.serial  # a bound in seconds: run alone, after the parallel part of `make test`
def test_a_killed_stage_leaves_no_server_behind(workspace: Path, stage: Launcher) -> None:
    update_params(workspace, {"finetune": {"steps": 100000}})
    process = stage(["python", "-m", "flows.finetune"], workspace, own_server_env())
    wait_for(lambda: started(workspace, "finetune"), 120, "finetune to start")
    servers = [p for p in children(process.pid) if "uvicorn" in " ".join(p.cmdline())]
    assert len(servers) == 1  # the stage's own Prefect API server
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    wait_for(lambda: not servers[0].is_running() or servers[0].status() == psutil.STATUS_ZOMBIE, 10,
             "the server to stop after its stage was killed")


@pytest.mark.serial  # a bound in seconds: run alone, after the parallel part of `make test`
def test_a_killed_dvc_repro_takes_its_stage_along_and_two_writers_never_meet(workspace: Path, stage: Launcher) -> None:
    update_params(workspace, {"finetune": {"steps": 100000}})
    dvc = stage(["dvc", "repro", "finetune"], workspace)
    wait_for(lambda: started(workspace, "finetune"), 120, "finetune to start under dvc repro")
    stages = [p for p in children(dvc.pid) if "flows.finetune" in " ".join(p.cmdline())]
    assert len(stages) == 1
    # a second writer on the same outputs is turned away while the first runs
    second = run(["python", "-m", "flows.finetune"], workspace, check=False)
    error = one_line_error(second)
    assert error.startswith(f"error: stage 'finetune' is already running here (pid {stages[0].pid})")
    os.kill(dvc.pid, signal.SIGKILL)  # kill -9 of dvc repro
    dvc.wait(timeout=30)
    wait_for(lambda: not stages[0].is_running() or stages[0].status() == psutil.STATUS_ZOMBIE, EXIT_BOUND_S,
             "the stage to stop after dvc repro was killed")


def test_files_kept_in_git_survive_a_failed_rerun(finished_workspace: Path) -> None:
    model = finished_workspace / "data/06_model"
    before = {name: (model / name).read_bytes() for name in ("metrics.json", "loss.csv")}
    update_params(finished_workspace, {"finetune": {"mixed_precision": "fp16", "steps": 9}})  # fp16 needs a GPU: fails
    failed = run(["dvc", "repro", "finetune"], finished_workspace, check=False)
    assert failed.returncode != 0 and "error: 'finetune.mixed_precision' is fp16, which needs a GPU" in failed.stderr
    assert {name: (model / name).read_bytes() for name in before} == before


# --- determinism -----------------------------------------------------------------------------------------


def test_prepare_to_mix_is_byte_identical_at_one_and_two_threads(workspace: Path, tmp_path: Path) -> None:
    """Torch's thread count (OMP_NUM_THREADS) changes nothing up to the mixes; fine-tuning and what follows
    are identical at a fixed thread count (the next test) but differ in the last bits across counts."""
    outputs = ("data/01_prepared", "data/02_captions", "data/03_embeddings", "data/05_mixed")
    hashes = {}
    for threads in (1, 2):
        copy = copy_workspace(workspace, tmp_path / f"threads-{threads}")
        for stage_name in ("prepare", "caption", "embed", "mix"):
            subprocess.run([sys.executable, "-m", f"flows.{stage_name}"], cwd=copy, check=True, capture_output=True,
                           env={**env(), "OMP_NUM_THREADS": str(threads)})
        hashes[threads] = [tree_hash(copy / out) if (copy / out).is_dir() else hashlib.sha256(
            (copy / out).read_bytes()).hexdigest() for out in outputs]
    assert hashes[1] == hashes[2]


def test_finetune_reruns_byte_identical_at_a_fixed_thread_count(workspace: Path) -> None:
    weights = workspace / "data/06_model/unet/diffusion_pytorch_model.safetensors"
    digests = []
    for _ in range(2):
        subprocess.run([sys.executable, "-m", "flows.finetune"], cwd=workspace, check=True, capture_output=True,
                       env={**env(), "OMP_NUM_THREADS": "2"})
        digests.append(hashlib.sha256(weights.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    assert TINY_PARAMS["finetune"]["steps"] > 0
