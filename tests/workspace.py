"""A throw-away git + DVC copy of this project, for tests that run real stages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from PIL import Image
from sklearn.datasets import load_digits

from mvcaug.io.locks import exclusive_lock

ROOT = Path(__file__).resolve().parents[1]

# Tiny but real: every stage does its job on the bundled digits in seconds.
TINY_PARAMS = {
    "prepare": {"train_per_class": 4, "val_per_class": 3, "test_per_class": 5, "reference_per_class": 6},
    "embed": {"max_length": 16},
    "mix": {"per_class": 4},
    "pretrain": {"glyphs": "0123456789K", "per_glyph": 4, "check_per_glyph": 1, "block_out_channels": [16, 32],
                 "steps": 6, "batch_size": 8, "lr_warmup_steps": 2, "check_every": 0, "check_steps": 2},
    "finetune": {"steps": 8, "batch_size": 8, "block_out_channels": [16, 32], "lr_warmup_steps": 2},
    "generate": {"images_per_class": 4, "shard_size": 2, "steps": 3},
    # a 2-epoch classifier is at chance, so its confidence test would drop everything: scores only
    "filter": {"enabled": False},
    # workers 1: the stage's own process trains the cells. Under `make test` each pytest-xdist process has one of
    # the two cores, and two spawned workers a stage cost about 11 s of CPU (their start-up) for cells that take 2 s;
    # the default's pool of worker processes runs end to end in test_full_grid and test_faults.
    "train": {"seeds": [0, 1], "phase2_epochs": 1, "workers": 1,
              "model_settings": {"small_cnn": {"epochs": 2, "width": 8}}},
    "report": {"samples_per_class": 2},
}


OWN_IMAGES = {"pretrain": {"source": "none"}, "finetune": {"init": "scratch", "pretrained": ""},
              "generate": {"compare_pretrained": False}}
"""What a run on an image folder changes besides prepare: the glyph corpus is the digits default's, so no
pretraining, a U-Net from scratch and no pretrained model to compare with (the README's "your own data")."""


def own_images(params: dict) -> dict:
    """params ({section: {key: value}}) with OWN_IMAGES merged into each section."""
    merged = {section: dict(values) for section, values in params.items()}
    for section, values in OWN_IMAGES.items():
        merged.setdefault(section, {}).update(values)
    return merged


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a fresh clone (plus local edits) holds."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line and (ROOT / line).is_file()]


def env() -> dict[str, str]:
    """The venv's python and dvc first on PATH, offline, no analytics."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def update_params(workspace: Path, changes: dict) -> None:
    """Merge {section: {key: value}} into the workspace's params.yaml."""
    path = workspace / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_workspace(target: Path, params: dict | None = None) -> Path:
    """Copy the project into target, apply params, and commit it in a new git repo."""
    for name in project_files():
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, destination)
    update_params(target, TINY_PARAMS if params is None else params)
    run(["git", "init", "-q"], target)
    run(["git", "add", "-A"], target)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "workspace"], target)
    return target


def stages_ran(output: str) -> set[str]:
    """Stage names that `dvc repro` reports as run."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def write_digits(folder: Path, start: int, stop: int) -> None:
    """Digits number [start, stop) of each class as PNGs in class folders."""
    digits = load_digits()
    for label in range(10):
        images = digits.images[digits.target == label][start:stop]
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(images, start):
            Image.fromarray((image * 255 / 16).astype("uint8")).save(folder / str(label) / f"{k:03d}.png")


def copy_workspace(source: Path, target: Path) -> Path:
    """A copy of a reproduced workspace (git history, DVC cache and outputs included) for a test to change
    alone: tests that share one reproduced workspace each get their own copy, so every test runs alone. target
    may exist if it is empty (the staging folder of shared_workspace)."""
    shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    return target


def commit_all(workspace: Path, message: str) -> None:
    run(["git", "add", "-A"], workspace)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], workspace)


SHARED_VARIABLE = "MVCAUG_TEST_WORKSPACES"
"""A folder `make test` creates for one invocation (and removes after it) where reproduced base workspaces are
built once and read by both of its pytest runs (the parallel part and the serial one) and every worker of them."""


def shared_workspace(name: str, build: Callable[[Path], Path], fallback: Path) -> Path:
    """The base workspace `name`, built by `build(folder)`: once per `make test` in $MVCAUG_TEST_WORKSPACES (the
    first process to ask builds it under a lock, later ones find it ready; a build that failed leaves nothing
    behind, so the next asker retries), or, without the variable (a lone pytest run), in `fallback`. Callers only
    ever copy it (copy_workspace): it is never changed after it is built. The folder lives for one `make test`,
    so the code it was built from cannot change under it."""
    shared = os.environ.get(SHARED_VARIABLE)
    if not shared:
        return build(fallback)
    ready = Path(shared) / name
    with exclusive_lock(Path(shared) / f"{name}.lock", wait=True):
        if not ready.is_dir():
            publish(ready, build)
    return ready


def publish(ready: Path, fill: Callable[[Path], object]) -> None:
    """fill(a staging folder beside ready), then rename it to ready: a reader never sees a half-built base, and
    a fill that failed leaves only the staging folder, which the next publish clears."""
    staging = ready.with_name(f"{ready.name}.building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    fill(staging)
    staging.rename(ready)


def offer_shared(name: str, source: Path) -> None:
    """Under `make test`, a copy of source becomes the base workspace `name` (shared_workspace) when no process
    has built it and none is building it: a builder that passes through the same state on its way hands it over."""
    shared = os.environ.get(SHARED_VARIABLE)
    if not shared:
        return
    ready = Path(shared) / name
    with exclusive_lock(Path(shared) / f"{name}.lock") as held:
        if held and not ready.is_dir():
            publish(ready, lambda staging: copy_workspace(source, staging))


MIXED_STAGES = frozenset({"prepare", "caption", "embed", "mix", "pretrain"})
"""What mixed_and_pretrained runs; `dvc repro` in it then runs every other stage."""


def every_stage(workspace: Path) -> set[str]:
    """The stage names of the workspace's dvc.yaml."""
    return set(yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"])


def mixed_and_pretrained(folder: Path) -> Path:
    """A tiny workspace reproduced up to the mix stage (prepare, caption, embed, mix) and the pretrained model
    that finetune starts from."""
    ws = make_workspace(folder)
    result = run(["dvc", "repro", "mix", "pretrain"], ws)
    assert stages_ran(result.stdout) == MIXED_STAGES, result.stdout
    return ws


def mixed_base(fallback: Path) -> Path:
    """The tiny workspace up to mix and pretrain, built once per `make test` for every module that starts from it
    (the fault tests of both pytest runs, the full grid and the generate runners; reproduced hands it over on its
    way); copy it before changing anything. Nothing that starts from it asks the Prefect server about the runs
    that built it: under `make test` those went to the server of whichever pytest process built it."""
    return shared_workspace("mixed", mixed_and_pretrained, fallback)


def reproduced(folder: Path) -> Path:
    """A tiny workspace with every stage reproduced and committed, all in this process (so its Prefect server saw
    each stage run). Half way, at mix and pretrain, it offers itself as the mixed base (offer_shared): the same
    files, built once per `make test`."""
    mixed_and_pretrained(folder)
    offer_shared("mixed", folder)
    result = run(["dvc", "repro"], folder)
    assert stages_ran(result.stdout) == every_stage(folder) - MIXED_STAGES, result.stdout
    commit_all(folder, "first run")
    return folder


def reproduced_base(fallback: Path) -> Path:
    """The tiny workspace with every stage reproduced and committed (reproduced), built once per `make test` for
    the modules that start from a finished run: the pipeline's tests (the first module handed out, so its process
    builds it and holds every stage's flow run on its Prefect server) and the fault tests that need a fine-tuned
    model. Copy it before changing anything (even a no-op `dvc repro` writes DVC's state files)."""
    return shared_workspace("reproduced", reproduced, fallback)
