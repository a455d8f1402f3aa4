"""Which fine-tuning checkpoint a rerun resumes, and that another run's checkpoint is never deleted.

A 4-GPU `accelerate launch` run interrupted and resumed by a plain `dvc repro` differs only in its process
count: it resumes (the weights, optimiser and LR schedule carry over; the data stream changes, and it says
so). A checkpoint of other inputs is moved aside, with one line saying why and how to remove it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from mvcaug.io.checkpoints import NOT_RESUMED, RunInputs, flatten_state, list_checkpoints
from mvcaug.method.finetune import ClassConditions, ConditionSampler, build_denoiser, train_denoiser
from mvcaug.core.params import FinetuneParams, MixParams

SCRATCH = FinetuneParams(block_out_channels=(8, 16), attention_head_dim=4, batch_size=4, learning_rate=2e-3,
                         lr_warmup_steps=2, validation_every=0, steps=8, checkpoint_every=2)
M, TEXT_DIM = 6, 16


class Interrupt(Exception):
    """Stands for a crash or a kill in the middle of training."""


def train(root: Path, stop_after: int | None = None, data: str = "data-1", **changes) -> list[int]:
    """A tiny pixel-space run on two classes of 8x8 images; the steps it ran (raises Interrupt after
    step index `stop_after`)."""
    params = dataclasses.replace(SCRATCH, **changes)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 1, 8, 8, generator=g) * 2 - 1
    emb = np.random.default_rng(0).normal(size=(8, M, TEXT_DIM)).astype(np.float32)
    classes = {"a": ClassConditions(np.arange(4), emb[:4], emb[:4]),
               "b": ClassConditions(np.arange(4, 8), emb[4:], emb[4:])}
    sampler = ConditionSampler(classes, MixParams(coarse_steps=1, fine_steps=2), "fresh", params.seed)
    denoiser = build_denoiser(params, channels=1, resolution=8, text_dim=TEXT_DIM, device=torch.device("cpu"))
    seen: list[int] = []

    def on_step(step: int, loss: float) -> None:
        seen.append(step)
        if step == stop_after:
            raise Interrupt

    try:
        train_denoiser(denoiser, images, sampler, np.zeros((M, TEXT_DIM), np.float32), params, on_step=on_step,
                       checkpoint_dir=root, data_digests={"data": data})
    except Interrupt:
        pass
    return seen


def as_if_written_by(checkpoint_dir: Path, processes: int) -> None:
    """Rewrite a one-process checkpoint as `processes` processes write it: their process count (hence
    digest), one RNG state per process and the LR schedule stepped once per process per step."""
    [checkpoint] = list_checkpoints(checkpoint_dir)
    meta = dict(checkpoint.meta)
    meta.update(RunInputs(meta["inputs"], processes).meta())
    meta["rng"] = meta["rng"] * processes
    (checkpoint.path / "state.json").write_text(json.dumps(meta))
    schedule = checkpoint.state("scheduler")
    schedule["last_epoch"] = checkpoint.step * processes
    schedule["_step_count"] = schedule["last_epoch"] + 1
    (checkpoint.path / "scheduler.json").write_text(json.dumps(flatten_state(schedule)[0]))


def learning_rate(checkpoint_dir: Path) -> float:
    return list_checkpoints(checkpoint_dir)[-1].state("optimizer")["param_groups"][0]["lr"]


def test_a_run_that_differs_only_in_its_process_count_resumes_and_says_the_stream_changes(tmp_path, caplog):
    straight, resumed = tmp_path / "straight" / "checkpoints", tmp_path / "resumed" / "checkpoints"
    train(straight, stop_after=3)  # its checkpoint at step 4: the LR an uninterrupted schedule has there
    train(resumed, stop_after=2)  # interrupted after step 3, last checkpoint at step 2
    as_if_written_by(resumed, 4)  # ... by `accelerate launch` on 4 GPUs
    with caplog.at_level(logging.WARNING, logger="mvcaug.method.finetune"):
        seen = train(resumed, stop_after=3)  # a plain `dvc repro`: one process
    assert seen == [2, 3]  # resumed from step 2, not started over
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "written by 4 process(es), with 1" in line and "data stream" in line
    assert [c.step for c in list_checkpoints(resumed)] == [4]
    assert list_checkpoints(resumed)[0].meta["processes"] == 1
    # the schedule goes on from step 2 as one process counts it (4 x 2 + 2 steps would be far down the cosine)
    assert list_checkpoints(resumed)[0].state("scheduler")["last_epoch"] == 4
    assert learning_rate(resumed) == pytest.approx(learning_rate(straight))
    assert not (tmp_path / "resumed" / f"checkpoints{NOT_RESUMED}").exists()


def test_a_checkpoint_of_other_inputs_is_kept_aside_with_one_line_saying_why(tmp_path, caplog):
    root = tmp_path / "checkpoints"
    train(root, stop_after=4)  # checkpoint at step 4
    [old] = list_checkpoints(root)
    files = sorted(p.name for p in old.path.iterdir())
    (root / ".tmp-step-000006-123").mkdir()  # a save cut short: never complete, removed
    with caplog.at_level(logging.WARNING, logger="mvcaug.io.checkpoints"):
        seen = train(root, stop_after=1, data="data-2", learning_rate=1e-3)
    assert seen == [0, 1]  # not resumed
    assert [p.name for p in root.iterdir()] == ["step-000002"]  # the new run's own
    [kept] = (tmp_path / f"checkpoints{NOT_RESUMED}").iterdir()
    assert kept.name.startswith("step-000004-") and sorted(p.name for p in kept.iterdir()) == files
    assert json.loads((kept / "state.json").read_text())["step"] == 4
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"checkpoint {old.path} is not resumed" in line
    assert "finetune params (learning_rate)" in line and "input data (data)" in line
    assert f"rm -r {tmp_path / f'checkpoints{NOT_RESUMED}'}" in line
    # the new run resumes its own checkpoint; the one set aside stays where it is
    assert train(root, data="data-2", learning_rate=1e-3) == list(range(2, 8))
    assert [p.name for p in (tmp_path / f"checkpoints{NOT_RESUMED}").iterdir()] == [kept.name]
