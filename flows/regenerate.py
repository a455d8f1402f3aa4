"""Scheduled regeneration: when the data or anything else the pipeline hashes changed, rerun it,
push the outputs to the DVC remote and commit the results on a new git branch.

    python -m flows.regenerate            # one run, now
    python -m flows.regenerate --serve    # a deployment: cron from params.yaml (regenerate.cron) and
                                          # a run whenever `mvcaug.data.arrived` is emitted (flows/ingest.py)

A run leaves the workspace on its new branch `<branch_prefix>/<UTC date-time>` (merge it when the
metrics suit you); the next run starts from there. A run that dies midway leaves dvc.lock as DVC
wrote it after the last finished stage; the next run reproduces what is still stale, then pushes
and commits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.api_server import prefect_api
from flows.cli import user_errors_as_one_line
from flows.pipeline import pipeline_flow
from mvcaug.io.locks import exclusive_lock, lock_holder
from mvcaug.io.params_file import load_params
from mvcaug.reporting.regeneration import Reproduced, commit_message, metrics_artifact, reproduced
from tasks.ingest import DATA_EVENT
from tasks.vcs import CommandFailed, commit_branch, head, metrics_diff, push, stale_stages, uncommitted

__all__ = ["regenerate"]

ARTIFACT_KEY = "regen-metrics-diff"
LOCK_FILE = ".dvc/tmp/regenerate.lock"  # .dvc/tmp is git-ignored by DVC itself


@flow(name="regenerate")
def regenerate(root: str = ".", branch_prefix: str = "regen") -> dict:
    """Rerun the pipeline if its inputs changed, push, commit on a new branch, publish the metrics diff."""
    logger = get_run_logger()
    lock = Path(root) / LOCK_FILE
    with exclusive_lock(lock) as held:
        if not held:
            logger.info("another regeneration is running (pid %s); nothing to do", lock_holder(lock))
            return {"status": "busy"}
        stale, pending = stale_stages(root), uncommitted(root)
        if not stale and not pending:
            logger.info("nothing changed since the last run (dvc status: up to date); nothing to do")
            return {"status": "unchanged"}
        previous = head(root)
        run = Reproduced([], [])
        if stale:
            logger.info("stale: %s; reproducing the pipeline", ", ".join(stale))
            run = reproduced(pipeline_flow(root))
        push(root)
        branch = commit_branch(root, branch_prefix, commit_message(run.ran, run.updated, stale))
        diff = metrics_diff(root, previous)
        artifact = metrics_artifact(branch, run.ran, previous, diff)
        create_markdown_artifact(key=ARTIFACT_KEY, markdown=artifact.markdown, description=artifact.description)
        logger.info("regenerated on branch %s; ran: %s\n%s", branch, run.ran or "none", diff or "no metric changed")
        return {"status": "regenerated", "branch": branch, "ran": run.ran, "metrics_diff": diff}


def serve(root: str, cron: str, branch_prefix: str) -> None:
    """Serve the deployment `regenerate/regenerate`: on the cron schedule and on every data arrival."""
    from prefect.events import DeploymentEventTrigger

    regenerate.serve(
        name="regenerate",
        cron=cron,
        parameters={"root": str(Path(root).resolve()), "branch_prefix": branch_prefix},
        triggers=[DeploymentEventTrigger(
            name="regenerate-on-new-data",
            expect={DATA_EVENT},
            match={"prefect.resource.id": "mvcaug.dataset.*"},
        )],
        # One run at a time in this runner: a run due while another runs waits for it (then finds
        # the new data); the file lock also turns away runs started elsewhere.
        limit=1,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=regenerate.__doc__)
    parser.add_argument("--root", default=".", help="the DVC project folder (default: .)")
    parser.add_argument("--serve", action="store_true",
                        help="serve the deployment (cron: regenerate.cron, trigger: mvcaug.data.arrived) instead of one run")
    args = parser.parse_args()
    with user_errors_as_one_line(CommandFailed):
        params = load_params(Path(args.root) / "params.yaml").regenerate
        if args.serve:
            serve(args.root, params.cron, params.branch_prefix)
        else:
            with prefect_api():  # one server for this run and every stage it reproduces
                regenerate(root=args.root, branch_prefix=params.branch_prefix)
