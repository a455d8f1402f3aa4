"""What a scheduled regeneration says it did: which stages ran and which data changed, in its commit message and
in the metrics-diff artifact the Prefect UI shows.

The regenerate flow (flows/regenerate.py) runs the pipeline, pushes, commits and publishes; everything here is
pure: the names of what ran and the diff text in, the words out, so the wording is tested without git or DVC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Reproduced", "reproduced", "commit_message", "MetricsArtifact", "metrics_artifact"]

DATA_SUFFIX = ".dvc"
"""The pipeline flow names a tracked data file by its .dvc file (data/00_source.dvc), a stage by its name."""


@dataclass(frozen=True)
class Reproduced:
    """What one pipeline run did, in dvc.yaml's order: the stages that ran and the tracked data that changed."""

    ran: list[str]
    updated: list[str]


def reproduced(did_run: Mapping[str, bool]) -> Reproduced:
    """Split the pipeline flow's {stage or .dvc file: whether it ran} into the stages that ran and the data files
    it updated: a commit that says "prepare, caption" ran must not count a changed image folder as a stage."""
    done = [name for name, ran in did_run.items() if ran]
    return Reproduced([name for name in done if not name.endswith(DATA_SUFFIX)],
                      [name for name in done if name.endswith(DATA_SUFFIX)])


def commit_message(ran: Sequence[str], updated: Sequence[str], stale: Sequence[str]) -> str:
    """The regeneration commit's message: the stages that ran in its subject (what `git log --oneline` shows of a
    branch), then the data updated and what dvc status called stale before the run, so a branch says why it exists
    even when no stage ran (uncommitted outputs only)."""
    return (f"Regenerate: {', '.join(ran) or 'no stage ran'}\n\n"
            f"Data updated: {', '.join(updated) or 'none'}\nStale before the run: {', '.join(stale) or 'none'}\n")


@dataclass(frozen=True)
class MetricsArtifact:
    """The Markdown artifact of one regeneration: its text and its one-line description."""

    markdown: str
    description: str


def metrics_artifact(branch: str | None, ran: Sequence[str], previous: str, diff: str) -> MetricsArtifact:
    """The artifact a regeneration publishes: its branch (None: nothing to commit), the stages that ran, and `dvc
    metrics diff` of the commit it started from (`previous`, shown by its first 8 characters as git shows a short
    hash) against this run; an empty diff is said in words, so the artifact never looks truncated."""
    short = previous[:8]
    return MetricsArtifact(
        markdown=(f"## Regeneration `{branch or 'no commit'}`\n\nStages run: {', '.join(ran) or 'none'}\n\n"
                  f"Metrics, `{short}` vs this run:\n\n{diff or 'No metric changed.'}\n"),
        description=f"dvc metrics diff {short} --md",
    )
