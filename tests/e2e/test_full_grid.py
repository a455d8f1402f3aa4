"""`train.full_grid: true` is the one switch from the reduced grid to every baseline x strategy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.workspace import copy_workspace, run, stages_ran, update_params

pytestmark = [pytest.mark.slow, pytest.mark.runtime(71)]  # seconds under `make test` at 18e8f52


def test_full_grid_trains_every_cell_and_reports_the_paper_table(mixed: Path, tmp_path: Path) -> None:
    ws = copy_workspace(mixed, tmp_path / "ws")  # up to mix and pretrain
    # workers 0, the default: one worker process per core trains the grid's cells, end to end
    update_params(ws, {"train": {"full_grid": True, "seeds": [0], "synthetic_budgets": [1.0], "workers": 0}})
    ran = stages_ran(run(["dvc", "repro"], ws).stdout)
    assert ran == {"finetune", "generate", "filter", "quality", "train", "replicates", "report"}, ran

    results = json.loads((ws / "data/10_train/results.json").read_text())
    cells = {(r["cell"]["baseline"], r["cell"]["strategy"], r["cell"]["synthetic_set"]) for r in results
             if not r["cell"]["added_per_class"]}
    baselines = ("default", "autoaugment", "randaugment", "trivialaugment")
    strategies = ("real", "combined", "rsp", "two_phase", "real_two_phase")  # two-phase's control too
    assert cells == ({(b, s, "mvc") for b in baselines for s in strategies}
                     | {("default", "combined", "unmixed"), ("default", "combined", "pretrained")})
    metrics = json.loads((ws / "metrics.json").read_text())["small_cnn"]
    for short in ("", "aa_", "ra_", "ta_"):
        for column in ("syn", "rsp", "two_phase"):
            assert f"{short}{column}" in metrics and "gain" in metrics[f"{short}{column}"]
    assert {"baseline", "aa", "ra", "ta", "syn_unmixed"} <= set(metrics)
    report = (ws / "data/12_report/report.md").read_text()
    assert "| model | Baseline | AA | RA | TA | Syn | AA+Syn | RA+Syn | TA+Syn |" in report
    confusion = sorted(p.stem for p in (ws / "data/10_train/plots/confusion").glob("*.json"))
    # one per grid column (seeds pooled, controls too), the unmixed set's, Table 4's, more_real's and the corpus's
    assert len(confusion) == 24
