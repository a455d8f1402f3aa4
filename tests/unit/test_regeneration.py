"""What a regeneration says it did: the split of the pipeline's run into stages and data, the commit message and
the metrics-diff artifact, on the repository's own stage names (dvc.yaml)."""

from __future__ import annotations

import yaml

from mvcaug.io.digests import PROJECT_ROOT
from mvcaug.reporting.regeneration import MetricsArtifact, Reproduced, commit_message, metrics_artifact, reproduced

STAGES = list(yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"])
"""The repository's stages, in dvc.yaml's order."""
DATA = "data/00_source.dvc"
"""A tracked data folder, as the pipeline flow names it beside the stages."""


def test_reproduced_tells_the_stages_that_ran_from_the_data_that_changed():
    did_run = {DATA: True, **{stage: i % 2 == 0 for i, stage in enumerate(STAGES)}, "data/00_unlabeled.dvc": False}
    run = reproduced(did_run)
    assert run == Reproduced(STAGES[::2], [DATA])  # dvc.yaml's order kept; skipped stages and data left out
    assert reproduced({stage: False for stage in STAGES}) == Reproduced([], [])


def test_the_commit_message_names_what_ran_in_its_subject():
    message = commit_message(STAGES[:2], [DATA], STAGES[:3])
    subject, blank, *body = message.splitlines()
    assert subject == f"Regenerate: {STAGES[0]}, {STAGES[1]}" and blank == ""
    assert body == [f"Data updated: {DATA}", f"Stale before the run: {', '.join(STAGES[:3])}"]
    assert commit_message([], [], []) == "Regenerate: no stage ran\n\nData updated: none\nStale before the run: none\n"


def test_the_artifact_shows_the_branch_the_stages_and_the_diff_against_the_short_commit():
    previous = "0d0faaf8c1e2b3a4d5e6f708192a3b4c5d6e7f80"
    diff = "| Path | Metric | HEAD | workspace | Change |\n| metrics.json | small_cnn.real.acc_mean | 0.93 | 0.94 | 0.01 |"
    artifact = metrics_artifact("regen/20260101-030000", STAGES[-2:], previous, diff)
    assert artifact == MetricsArtifact(
        markdown=(f"## Regeneration `regen/20260101-030000`\n\nStages run: {', '.join(STAGES[-2:])}\n\n"
                  f"Metrics, `0d0faaf8` vs this run:\n\n{diff}\n"),
        description="dvc metrics diff 0d0faaf8 --md")
    nothing = metrics_artifact(None, [], previous, "")
    assert nothing.markdown == ("## Regeneration `no commit`\n\nStages run: none\n\n"
                                "Metrics, `0d0faaf8` vs this run:\n\nNo metric changed.\n")
