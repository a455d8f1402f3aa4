"""The whole pipeline as one flow: for the Prefect UI and for deployments.

`python -m flows.pipeline` leaves the workspace as `dvc repro` would: same outputs, dvc.lock up to
date, unchanged stages skipped.
"""

import argparse
import logging

from prefect import flow

from flows.api_server import prefect_api
from flows.cli import user_errors_as_one_line
from tasks.vcs import CommandFailed, reproduce, stage_order

__all__ = ["pipeline_flow"]

log = logging.getLogger("mvcaug.pipeline")


@flow(name="pipeline")
def pipeline_flow(root: str = ".", force: bool = False) -> dict[str, bool]:
    """Reproduce every stage of dvc.yaml in order; returns {stage: whether it ran}."""
    ran = {}
    for stage in stage_order(root):
        ran[stage] = reproduce(stage, root, force)
    log.info("ran: %s; skipped: %s", [s for s, r in ran.items() if r] or "none",
             [s for s, r in ran.items() if not r] or "none")
    return ran


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=pipeline_flow.__doc__)
    parser.add_argument("--root", default=".", help="the DVC project folder")
    parser.add_argument("--force", action="store_true", help="rerun every stage")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    with user_errors_as_one_line(CommandFailed), prefect_api():  # one server for the flow and every stage
        pipeline_flow(root=args.root, force=args.force)
